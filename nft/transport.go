package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// batchSocket is the netlink socket batches go through, in namespace ns.
// It stays open from one batch to the next: closing a netlink socket made
// in another namespace took 6-11 ms, half of a one-service change. After
// any error it is closed, so that no late reply of a failed batch is
// read as the answer to the next; the next batch dials again. Its users
// serialize their calls.
type batchSocket struct {
	ns  int
	nc  *netlink.Conn
	seq uint32
}

// send sends b and waits for the kernel's verdict.
//
// Only the last message before the batch end asks for an ack. Why:
// google/nftables marks every message of a batch NLM_F_ACK and reads the
// acks one by one; at 10,000 services x 10 endpoints (then 130,000
// messages) those acks took 4.6 s of a 5.7 s sync, and they need a
// socket buffer of 100 MB or more, or the kernel drops them and reports
// ENOBUFS after committing. Without the flag the kernel reports only
// errors, and the ack of the last message says the batch was read to its
// end.
func (s *batchSocket) send(b *batch) (err error) {
	if b.msgs < 3 {
		return nil
	}
	if s.nc == nil {
		nc, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: s.ns})
		if err != nil {
			return fmt.Errorf("netlink dial: %w", err)
		}
		s.nc = nc
	}
	defer func() {
		if err != nil {
			s.nc.Close()
			s.nc = nil
		}
	}()
	// Number the messages and ask for the one ack.
	buf := b.buf
	var want uint32
	for off := 0; off < len(buf); {
		s.seq++
		binary.NativeEndian.PutUint32(buf[off+8:], s.seq)
		if off == b.last {
			flags := binary.NativeEndian.Uint16(buf[off+6:])
			binary.NativeEndian.PutUint16(buf[off+6:], flags|uint16(netlink.Acknowledge))
			want = s.seq
		}
		off += nlmsgAlign(int(binary.NativeEndian.Uint32(buf[off:])))
	}
	nc := s.nc
	// The batch goes in one write (the kernel reads a batch from one
	// buffer only), which must fit the send buffer; as root the size is
	// forced past net.core.wmem_max.
	if err := nc.SetWriteBuffer(len(buf) + 1<<16); err != nil {
		return fmt.Errorf("netlink send buffer of %d bytes: %w", len(buf), err)
	}
	if err := nc.SetDeadline(time.Now().Add(2 * time.Minute)); err != nil {
		return err
	}
	if err := writeAll(nc, buf); err != nil {
		return fmt.Errorf("send batch of %d messages, %d bytes: %w", b.msgs, len(buf), err)
	}
	var errs error
	for {
		got, err := nc.Receive()
		if err != nil {
			// The kernel aborted the transaction; it reports each
			// failing message, the ack of the last one follows.
			var op *netlink.OpError
			if !errors.As(err, &op) || op.Err == nil || errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ETIMEDOUT) || errors.Is(err, os.ErrDeadlineExceeded) {
				if errs != nil {
					return errs
				}
				return err
			}
			errs = errors.Join(errs, err)
			// The kernel queues its replies all at once, at the end of
			// the batch: what is left comes at once, or the error was
			// the last message's own.
			nc.SetDeadline(time.Now().Add(100 * time.Millisecond))
			continue
		}
		for _, m := range got {
			if m.Header.Sequence == want {
				return errs
			}
		}
	}
}

func nlmsgAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// writeAll sends buf in one write on nc's socket.
func writeAll(nc *netlink.Conn, buf []byte) error {
	rc, err := nc.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	err = rc.Write(func(fd uintptr) bool {
		var n int
		n, werr = unix.Write(int(fd), buf)
		if werr == unix.EAGAIN {
			return false
		}
		if werr == nil && n != len(buf) {
			werr = fmt.Errorf("short write: %d of %d bytes", n, len(buf))
		}
		return true
	})
	return errors.Join(err, werr)
}
