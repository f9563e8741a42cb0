package nft

import (
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
func batchConn(ns int) (*nftables.Conn, *batchResult) {
	res := &batchResult{}
	ack := []netlink.Message{{Header: netlink.Header{Type: netlink.Error}, Data: make([]byte, 20)}}
	c, _ := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		if req != nil && !res.sent {
			res.sent = true
			res.err = sendBatch(ns, req)
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

// sendBatch sends req (a batch, begin and end messages included) and
// waits for the kernel's verdict.
func sendBatch(ns int, req []netlink.Message) error {
	if len(req) < 3 {
		return nil
	}
	nc, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: ns})
	if err != nil {
		return fmt.Errorf("netlink dial: %w", err)
	}
	defer nc.Close()
	size := 0
	msgs := make([]netlink.Message, len(req))
	for i, m := range req {
		m.Header.PID, m.Header.Sequence = 0, 0
		// Echo (set on rules, to learn their handles) would send a copy
		// of every rule back.
		m.Header.Flags &^= netlink.Acknowledge | netlink.Echo
		msgs[i] = m
		size += 16 + len(m.Data)
	}
	last := len(msgs) - 2 // the message before the batch end
	msgs[last].Header.Flags |= netlink.Acknowledge
	// The batch goes in one sendmsg, which must fit the send buffer; as
	// root the size is forced past net.core.wmem_max.
	if err := nc.SetWriteBuffer(size + 1<<16); err != nil {
		return fmt.Errorf("netlink send buffer of %d bytes: %w", size, err)
	}
	if err := nc.SetDeadline(time.Now().Add(2 * time.Minute)); err != nil {
		return err
	}
	sent, err := nc.SendMessages(msgs)
	if err != nil {
		return fmt.Errorf("send batch of %d messages, %d bytes: %w", len(msgs), size, err)
	}
	want := sent[last].Header.Sequence
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
