package nft

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// batch is one transaction as the kernel reads it: netlink messages,
// batch begin to batch end, in one buffer. Rules and set elements, the
// bulk of a full program, are marshalled here straight into the buffer;
// the few other messages (table, sets, chains) are built by
// google/nftables and copied in (see [libMessages]).
//
// Why: building every message through the library took more user time
// than the kernel took to apply them (0.3-1 s of a full program), most
// of it allocating attribute slices that are copied three times.
//
// Messages carry no sequence number, PID or NLM_F_ACK; the sender fills
// those in (see batchSocket).
type batch struct {
	buf []byte
	// msgs counts the messages, begin and end included; last is the
	// offset of the last message before the end.
	msgs, last int
	lastStart  int
	// exprs caches the marshalled expressions of a rule by its text,
	// which determines them: most chains share their first rule.
	exprs map[string][]byte
	// err is the first attribute too long for its 16-bit length.
	err error
}

// gotoCode is NFT_GOTO (-4) as the kernel reads it, a big-endian u32.
var gotoCode = func() uint32 { v := int32(unix.NFT_GOTO); return uint32(v) }()

func newBatch(sizeHint int) *batch {
	b := &batch{buf: make([]byte, 0, sizeHint), exprs: map[string][]byte{}}
	b.begin(unix.NFNL_MSG_BATCH_BEGIN, netlink.Request, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)
	b.finish(0)
	return b
}

// close appends the batch end; nothing may be added after it.
func (b *batch) close() {
	b.last = b.lastStart
	start := b.begin(unix.NFNL_MSG_BATCH_END, netlink.Request, unix.AF_UNSPEC, unix.NFNL_SUBSYS_NFTABLES)
	b.finish(start)
}

// begin starts a message: its header (length to be set by finish) and
// the nfgenmsg. It returns the message's offset.
func (b *batch) begin(typ uint16, flags netlink.HeaderFlags, family byte, resID uint16) int {
	start := len(b.buf)
	b.buf = binary.NativeEndian.AppendUint32(b.buf, 0)
	b.buf = binary.NativeEndian.AppendUint16(b.buf, typ)
	b.buf = binary.NativeEndian.AppendUint16(b.buf, uint16(flags))
	b.buf = append(b.buf, 0, 0, 0, 0, 0, 0, 0, 0) // sequence, PID
	b.buf = append(b.buf, family, unix.NFNETLINK_V0)
	b.buf = binary.BigEndian.AppendUint16(b.buf, resID)
	return start
}

// finish sets the length of the message at start and pads it.
func (b *batch) finish(start int) {
	binary.NativeEndian.PutUint32(b.buf[start:], uint32(len(b.buf)-start))
	b.pad()
	b.msgs++
	b.lastStart = start
}

func (b *batch) pad() {
	for len(b.buf)%unix.NLA_ALIGNTO != 0 {
		b.buf = append(b.buf, 0)
	}
}

// attr appends one attribute.
func (b *batch) attr(typ uint16, data []byte) {
	b.buf = binary.NativeEndian.AppendUint16(b.buf, uint16(unix.SizeofNlAttr+len(data)))
	b.buf = binary.NativeEndian.AppendUint16(b.buf, typ)
	b.buf = append(b.buf, data...)
	b.pad()
}

// str appends a string attribute, NUL-terminated.
func (b *batch) str(typ uint16, s string) {
	b.buf = binary.NativeEndian.AppendUint16(b.buf, uint16(unix.SizeofNlAttr+len(s)+1))
	b.buf = binary.NativeEndian.AppendUint16(b.buf, typ)
	b.buf = append(b.buf, s...)
	b.buf = append(b.buf, 0)
	b.pad()
}

// nest starts a nested attribute; end closes it.
func (b *batch) nest(typ uint16) int {
	start := len(b.buf)
	b.buf = append(b.buf, 0, 0)
	b.buf = binary.NativeEndian.AppendUint16(b.buf, typ|unix.NLA_F_NESTED)
	return start
}

func (b *batch) end(start int) {
	n := len(b.buf) - start
	if n > 0xffff && b.err == nil {
		b.err = fmt.Errorf("netlink attribute of %d bytes, more than 65535", n)
	}
	binary.NativeEndian.PutUint16(b.buf[start:], uint16(n))
}

// lib copies in messages built by google/nftables, without the acks and
// echoes it asks for.
func (b *batch) lib(msgs []netlink.Message) {
	for _, m := range msgs {
		start := len(b.buf)
		b.buf = binary.NativeEndian.AppendUint32(b.buf, 0)
		b.buf = binary.NativeEndian.AppendUint16(b.buf, uint16(m.Header.Type))
		b.buf = binary.NativeEndian.AppendUint16(b.buf, uint16(m.Header.Flags&^(netlink.Acknowledge|netlink.Echo)))
		b.buf = append(b.buf, 0, 0, 0, 0, 0, 0, 0, 0)
		b.buf = append(b.buf, m.Data...)
		b.finish(start)
	}
}

// rule appends "add rule" of r at the end of chain.
func (b *batch) rule(table *nftables.Table, chain string, r Rule) error {
	start := b.begin(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWRULE, netlink.Request|netlink.Create|unix.NLM_F_APPEND, byte(table.Family), 0)
	b.str(unix.NFTA_RULE_TABLE, table.Name)
	b.str(unix.NFTA_RULE_CHAIN, chain)
	ex, ok := b.exprs[r.Text]
	if !ok {
		exStart := len(b.buf)
		for _, e := range r.exprs {
			data, err := expr.Marshal(byte(table.Family), e)
			if err != nil {
				return fmt.Errorf("rule %q: %w", r.Text, err)
			}
			b.attr(unix.NFTA_LIST_ELEM|unix.NLA_F_NESTED, data)
		}
		ex = append([]byte(nil), b.buf[exStart:]...)
		b.buf = b.buf[:exStart]
		b.exprs[r.Text] = ex
	}
	n := b.nest(unix.NFTA_RULE_EXPRESSIONS)
	b.buf = append(b.buf, ex...)
	b.end(n)
	b.attr(unix.NFTA_RULE_USERDATA, userdata.AppendString(nil, userdata.TypeComment, r.ID(chain)))
	b.finish(start)
	return nil
}

// elements appends the addition (or deletion) of the elements of all at
// indices, all of one set.
func (b *batch) elements(table *nftables.Table, set string, all []Element, indices []int32, del bool) {
	typ, flags := uint16(unix.NFT_MSG_NEWSETELEM), netlink.Request|netlink.Create
	if del {
		typ, flags = unix.NFT_MSG_DELSETELEM, netlink.Request
	}
	start := b.begin(unix.NFNL_SUBSYS_NFTABLES<<8|typ, flags, byte(table.Family), 0)
	b.str(unix.NFTA_SET_ELEM_LIST_TABLE, table.Name)
	b.str(unix.NFTA_SET_ELEM_LIST_SET, set)
	list := b.nest(unix.NFTA_SET_ELEM_LIST_ELEMENTS)
	for _, i := range indices {
		e := &all[i]
		item := b.nest(unix.NFTA_LIST_ELEM)
		key := b.nest(unix.NFTA_SET_ELEM_KEY)
		// The key goes straight into the buffer, its length patched in
		// after it (a multiple of 4: no padding).
		v := len(b.buf)
		b.buf = append(b.buf, 0, 0)
		b.buf = binary.NativeEndian.AppendUint16(b.buf, unix.NFTA_DATA_VALUE)
		b.buf = appendServiceKey(b.buf, e.Addr, e.Proto, e.Port)
		if e.endpoint() {
			b.buf = binary.NativeEndian.AppendUint32(b.buf, e.Index)
		}
		b.end(v)
		b.end(key)
		switch {
		case e.endpoint():
			data := b.nest(unix.NFTA_SET_ELEM_DATA)
			b.attr(unix.NFTA_DATA_VALUE, endpointBytes(e.To))
			b.end(data)
		case e.Chain != "":
			data := b.nest(unix.NFTA_SET_ELEM_DATA)
			v := b.nest(unix.NFTA_DATA_VERDICT)
			b.attr(unix.NFTA_VERDICT_CODE, binary.BigEndian.AppendUint32(nil, gotoCode))
			b.str(unix.NFTA_VERDICT_CHAIN, e.Chain)
			b.end(v)
			b.end(data)
		}
		b.end(item)
	}
	b.end(list)
	b.finish(start)
}

// libMessages returns the messages f queues on a google/nftables
// connection, without batch begin and end; nothing is sent.
func libMessages(f func(c *nftables.Conn) error) ([]netlink.Message, error) {
	var got []netlink.Message
	ack := []netlink.Message{{Header: netlink.Header{Type: netlink.Error}, Data: make([]byte, 20)}}
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		if len(req) >= 2 && got == nil {
			got = req[1 : len(req)-1]
		}
		// Flush waits for one ack per message: it gets them here.
		return ack, nil
	}))
	if err != nil {
		return nil, err
	}
	if err := f(c); err != nil {
		return nil, err
	}
	if err := c.Flush(); err != nil {
		return nil, err
	}
	return got, nil
}
