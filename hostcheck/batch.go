package hostcheck

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// batchSize is how many route requests go out in one sendmsg: their
// replies must fit the socket's receive buffer (212 kB by default; a
// route reply takes well under 1 kB of it).
const batchSize = 64

// viaInterface asks the kernel, over one netlink socket and in batches of
// batchSize requests per sendmsg, for the route to each of ips, exactly as
// netlink.RouteGet does (RTM_GETROUTE, RTM_F_LOOKUP_TABLE), and reports
// for each whether it leaves through iface and is not a local address.
// false covers every other answer (another interface, a local address, no
// route, a lookup error): the caller asks again one by one for the words.
// An error means the batch could not be asked at all.
func viaInterface(iface string, ips []netip.Addr) ([]bool, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("route batch: netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("route batch: bind: %w", err)
	}
	// A lost reply must not hang a sync: the caller falls back.
	tv := unix.Timeval{Sec: 2}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, fmt.Errorf("route batch: timeout: %w", err)
	}
	nb := &nlBatch{fd: fd, rbuf: make([]byte, 64<<10)}
	index, err := nb.linkIndex(iface)
	if err != nil {
		return nil, err
	}
	ok := make([]bool, len(ips))
	if index == 0 {
		return ok, nil // no such interface: nothing routes through it
	}
	for from := 0; from < len(ips); from += batchSize {
		chunk := ips[from:min(len(ips), from+batchSize)]
		if err := nb.routes(chunk, index, ok[from:]); err != nil {
			return nil, err
		}
	}
	return ok, nil
}

// nlBatch is one netlink socket and its sequence numbers.
type nlBatch struct {
	fd   int
	seq  uint32
	rbuf []byte
}

// linkIndex returns iface's index, 0 when there is no such interface.
func (b *nlBatch) linkIndex(iface string) (int, error) {
	b.seq++
	msg := nlMsg(unix.RTM_GETLINK, b.seq, make([]byte, unix.SizeofIfInfomsg))
	msg = appendAttr(msg, unix.IFLA_IFNAME, append([]byte(iface), 0))
	setLen(msg)
	if err := unix.Sendto(b.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("route batch: send link request: %w", err)
	}
	index := -1
	err := b.receive(b.seq, 1, func(_ int, m syscall.NetlinkMessage) {
		switch {
		case m.Header.Type == unix.NLMSG_ERROR:
			index = 0
		case m.Header.Type == unix.RTM_NEWLINK && len(m.Data) >= unix.SizeofIfInfomsg:
			index = int(int32(binary.NativeEndian.Uint32(m.Data[4:8])))
		}
	})
	if err != nil {
		return 0, err
	}
	if index < 0 {
		return 0, errors.New("route batch: no link reply")
	}
	return index, nil
}

// routes asks for the routes to ips in one sendmsg and sets ok[i] when
// ips[i] leaves through the interface with index, not as a local address.
func (b *nlBatch) routes(ips []netip.Addr, index int, ok []bool) error {
	first := b.seq + 1
	var buf []byte
	for _, ip := range ips {
		ip = ip.Unmap()
		b.seq++
		rt := make([]byte, unix.SizeofRtMsg)
		rt[0], rt[1] = unix.AF_INET, 32 // family, dst_len
		if ip.Is6() {
			rt[0], rt[1] = unix.AF_INET6, 128
		}
		binary.NativeEndian.PutUint32(rt[8:12], unix.RTM_F_LOOKUP_TABLE) // rtm_flags
		msg := appendAttr(nlMsg(unix.RTM_GETROUTE, b.seq, rt), unix.RTA_DST, ip.AsSlice())
		setLen(msg)
		buf = append(buf, msg...)
	}
	if err := unix.Sendto(b.fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("route batch: send %d route requests: %w", len(ips), err)
	}
	return b.receive(first, len(ips), func(i int, m syscall.NetlinkMessage) {
		if m.Header.Type != unix.RTM_NEWROUTE || len(m.Data) < unix.SizeofRtMsg {
			return // an error reply: false, asked again by the caller
		}
		if m.Data[7] == unix.RTN_LOCAL { // rtm_type
			return
		}
		attrs, err := syscall.ParseNetlinkRouteAttr(&m)
		if err != nil {
			return
		}
		for _, a := range attrs {
			if a.Attr.Type == unix.RTA_OIF && len(a.Value) >= 4 {
				ok[i] = int(binary.NativeEndian.Uint32(a.Value)) == index
			}
		}
	})
}

// receive reads replies until each of the n requests numbered from first
// has had one, calling reply with the request's position.
func (b *nlBatch) receive(first uint32, n int, reply func(i int, m syscall.NetlinkMessage)) error {
	seen := make([]bool, n)
	for left := n; left > 0; {
		nr, _, err := unix.Recvfrom(b.fd, b.rbuf, 0)
		if err != nil {
			return fmt.Errorf("route batch: receive (%d of %d replies missing): %w", left, n, err)
		}
		msgs, err := syscall.ParseNetlinkMessage(b.rbuf[:nr])
		if err != nil {
			return fmt.Errorf("route batch: parse reply: %w", err)
		}
		for _, m := range msgs {
			i := int(m.Header.Seq - first)
			if m.Header.Seq < first || i >= n || seen[i] {
				continue // not ours, or an ack after the answer
			}
			seen[i] = true
			left--
			reply(i, m)
		}
	}
	return nil
}

// nlMsg is a netlink request header of typ and seq followed by body; its
// length is set by setLen once the attributes are appended.
func nlMsg(typ uint16, seq uint32, body []byte) []byte {
	m := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(body)+32)
	binary.NativeEndian.PutUint16(m[4:6], typ)
	binary.NativeEndian.PutUint16(m[6:8], unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(m[8:12], seq)
	return append(m, body...)
}

// appendAttr appends a route attribute, padded to 4 bytes.
func appendAttr(m []byte, typ uint16, v []byte) []byte {
	var h [unix.SizeofRtAttr]byte
	binary.NativeEndian.PutUint16(h[0:2], uint16(unix.SizeofRtAttr+len(v)))
	binary.NativeEndian.PutUint16(h[2:4], typ)
	m = append(append(m, h[:]...), v...)
	for len(m)%4 != 0 {
		m = append(m, 0)
	}
	return m
}

// setLen writes the message's length into its header.
func setLen(m []byte) { binary.NativeEndian.PutUint32(m[0:4], uint32(len(m))) }
