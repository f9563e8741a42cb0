package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// batchConn returns an *nftables.Conn whose Flush sends its batch over a
// real netlink socket in namespace ns, asking the kernel to acknowledge
// only the last message.
//
// Why: google/nftables marks every message of a batch NLM_F_ACK and
// reads the acks one by one. A full program of 10,000 services x 10
// endpoints is about 130,000 messages, and those acks took 4.6 s of a
// 5.7 s sync (and need a socket buffer of 100 MB or more, or the kernel
// drops them and reports ENOBUFS after committing). Without the flag the
// kernel reports only errors, and the ack of the last message says the
// batch was read to its end. The library still builds every message;
// only the sending is done here, through its test-dial hook, which hands
// over the marshalled batch.
func batchConn(sock *batchSocket) (*nftables.Conn, *batchResult) {
	res := &batchResult{}
	ack := []netlink.Message{{Header: netlink.Header{Type: netlink.Error}, Data: make([]byte, 20)}}
	c, _ := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		if req != nil && !res.sent {
			res.sent = true
			res.err = sock.send(req)
		}
		// Flush waits for one ack per message: it gets them here, in
		// process; the real outcome is in res.
		return ack, nil
	}))
	return c, res
}

// batchResult is the outcome of the batch a batchConn sent.
type batchResult struct {
	sent bool
	err  error
}

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

// send sends req (a batch, begin and end messages included) and waits
// for the kernel's verdict.
func (s *batchSocket) send(req []netlink.Message) (err error) {
	if len(req) < 3 {
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
	return sendBatch(s.nc, req, &s.seq)
}

// sendBatch sends req on nc, numbering its messages from *seq on, and
// waits for the kernel's verdict.
func sendBatch(nc *netlink.Conn, req []netlink.Message, seq *uint32) error {
	// The batch is marshalled here into one buffer of the exact size,
	// and written with one sendmsg: the kernel reads a batch from one
	// buffer only, begin to end. The last message before the batch end
	// asks for an ack; echo (set on rules, to learn their handles) would
	// send a copy of every rule back.
	size := 0
	for _, m := range req {
		size += nlmsgAlign(unix.SizeofNlMsghdr + len(m.Data))
	}
	last := len(req) - 2
	seq0 := *seq + 1
	*seq += uint32(len(req))
	buf := make([]byte, 0, size)
	for i, m := range req {
		flags := m.Header.Flags &^ (netlink.Acknowledge | netlink.Echo)
		if i == last {
			flags |= netlink.Acknowledge
		}
		n := unix.SizeofNlMsghdr + len(m.Data)
		buf = binary.NativeEndian.AppendUint32(buf, uint32(n))
		buf = binary.NativeEndian.AppendUint16(buf, uint16(m.Header.Type))
		buf = binary.NativeEndian.AppendUint16(buf, uint16(flags))
		buf = binary.NativeEndian.AppendUint32(buf, seq0+uint32(i))
		buf = binary.NativeEndian.AppendUint32(buf, 0)
		buf = append(buf, m.Data...)
		buf = append(buf, make([]byte, nlmsgAlign(n)-n)...)
		req[i].Data = nil // what the kernel has needs no second copy here
	}
	// The batch must fit the send buffer; as root the size is forced
	// past net.core.wmem_max.
	if err := nc.SetWriteBuffer(size + 1<<16); err != nil {
		return fmt.Errorf("netlink send buffer of %d bytes: %w", size, err)
	}
	if err := nc.SetDeadline(time.Now().Add(2 * time.Minute)); err != nil {
		return err
	}
	if err := writeAll(nc, buf); err != nil {
		return fmt.Errorf("send batch of %d messages, %d bytes: %w", len(req), size, err)
	}
	want := seq0 + uint32(last)
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
