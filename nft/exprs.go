package nft

import (
	"encoding/binary"
	"net/netip"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/lbd/lbd/lb"
)

// The expression builders below each return the netlink expressions of
// one nft statement or match; render.go pairs them with the statement's
// text. Registers: 1 and 2 are the 16-byte registers; a concatenation is
// loaded into the 4-byte registers from 8 (NFT_REG32_00) on.
const (
	reg1     = unix.NFT_REG_1
	reg2     = unix.NFT_REG_2
	reg32_00 = unix.NFT_REG32_00
)

// family is an IP family of a dispatch map and a service-port chain.
type family int

const (
	ipv4 family = 4
	ipv6 family = 6
)

func (f family) nfproto() byte {
	if f == ipv6 {
		return unix.NFPROTO_IPV6
	}
	return unix.NFPROTO_IPV4
}

// word is the nft name of the family's header: "ip" or "ip6".
func (f family) word() string {
	if f == ipv6 {
		return "ip6"
	}
	return "ip"
}

func (f family) addrLen() uint32 {
	if f == ipv6 {
		return 16
	}
	return 4
}

func familyOf(a netip.Addr) family {
	if a.Unmap().Is4() {
		return ipv4
	}
	return ipv6
}

func addrBytes(a netip.Addr) []byte { return a.Unmap().AsSlice() }

func native32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

var zero4 = []byte{0, 0, 0, 0}

func protoNumber(p lb.Protocol) byte {
	switch p {
	case lb.TCP:
		return unix.IPPROTO_TCP
	case lb.UDP:
		return unix.IPPROTO_UDP
	case lb.SCTP:
		return unix.IPPROTO_SCTP
	}
	return 0
}

// nfprotoIs matches the packet's family: the implicit dependency nft adds
// before "ip daddr" in an inet table.
func nfprotoIs(f family) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{f.nfproto()}},
	}
}

// addrField loads the source (saddr) or destination address into reg.
func addrField(f family, dst bool, reg uint32) *expr.Payload {
	off := uint32(12) // ip saddr
	switch {
	case f == ipv4 && dst:
		off = 16
	case f == ipv6 && !dst:
		off = 8
	case f == ipv6 && dst:
		off = 24
	}
	return &expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: f.addrLen()}
}

// serviceKey loads "daddr . meta l4proto . th dport" into the 4-byte
// registers from 8 on, after checking the family.
func serviceKey(f family) []expr.Any {
	words := f.addrLen() / 4
	return append(nfprotoIs(f),
		addrField(f, true, reg32_00),
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32_00 + words},
		&expr.Payload{DestRegister: reg32_00 + words + 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	)
}

// serviceKeyBytes is an element key of a "daddr . inet_proto .
// inet_service" set: each part padded to 4 bytes, as the registers hold
// them.
func serviceKeyBytes(a netip.Addr, p lb.Protocol, port uint16) []byte {
	return appendServiceKey(make([]byte, 0, 28), a, p, port)
}

// appendServiceKey appends serviceKeyBytes(a, p, port) to k.
func appendServiceKey(k []byte, a netip.Addr, p lb.Protocol, port uint16) []byte {
	if a = a.Unmap(); a.Is4() {
		b := a.As4()
		k = append(k, b[:]...)
	} else {
		b := a.As16()
		k = append(k, b[:]...)
	}
	k = append(k, protoNumber(p), 0, 0, 0)
	k = binary.BigEndian.AppendUint16(k, port)
	return append(k, 0, 0)
}

// markIsSet: "meta mark & M == M" (M is one bit).
func markIs(m uint32, set bool) []expr.Any {
	op := expr.CmpOpNeq
	if !set {
		op = expr.CmpOpEq
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: native32(m), Xor: zero4},
		&expr.Cmp{Op: op, Register: reg1, Data: zero4},
	}
}

// markSet: "meta mark set meta mark | M".
func markSet(m uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: native32(^m), Xor: native32(m)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1},
	}
}

// markClear: "meta mark set meta mark & ^M".
func markClear(m uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: native32(^m), Xor: zero4},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg1},
	}
}

// ctStateNew: "ct state new".
func ctStateNew() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: native32(expr.CtStateBitNEW), Xor: zero4},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: zero4},
	}
}

// ctDNATEstablished: "ct status dnat ct state established,related".
func ctDNATEstablished() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: native32(ipsDstNAT), Xor: zero4},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: zero4},
		&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: native32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED), Xor: zero4},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: zero4},
	}
}

// saddrIn: "ip saddr P" for a prefix P of family f. Here and in the
// affinity matches the family check is redundant (the dispatch map chose
// the family) but lets `nft list` print "ip saddr" instead of raw offsets.
func saddrIn(f family, p netip.Prefix) []expr.Any {
	mask := make([]byte, f.addrLen())
	for i := range p.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return append(nfprotoIs(f),
		addrField(f, false, reg1),
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: f.addrLen(), Mask: mask, Xor: make([]byte, f.addrLen())},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: addrBytes(p.Masked().Addr())},
	)
}

// affinityHit: "ip saddr @set update @set { ip saddr }": the client is in
// the set, and its entry is renewed.
func affinityHit(f family, set string) []expr.Any {
	return append(nfprotoIs(f),
		addrField(f, false, reg1),
		&expr.Lookup{SourceRegister: reg1, SetName: set},
		&expr.Dynset{SrcRegKey: reg1, SetName: set, Operation: unix.NFT_DYNSET_OP_UPDATE},
	)
}

// affinityRecord: "update @set { ip saddr }".
func affinityRecord(f family, set string) []expr.Any {
	return append(nfprotoIs(f),
		addrField(f, false, reg1),
		&expr.Dynset{SrcRegKey: reg1, SetName: set, Operation: unix.NFT_DYNSET_OP_UPDATE},
	)
}

// numgenIs: "numgen random mod n == 0".
func numgenIs(n uint32) []expr.Any {
	return []expr.Any{
		&expr.Numgen{Register: reg1, Modulus: n, Type: unix.NFT_NG_RANDOM},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: zero4},
	}
}

// dnatTo: "dnat ip to addr:port".
func dnatTo(e lb.Endpoint) []expr.Any {
	f := familyOf(e.IP)
	return []expr.Any{
		&expr.Immediate{Register: reg1, Data: addrBytes(e.IP)},
		&expr.Immediate{Register: reg2, Data: binaryutil.BigEndian.PutUint16(e.Port)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(f.nfproto()), RegAddrMin: reg1, RegProtoMin: reg2, Specified: true},
	}
}

func l4protoIs(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{p}},
	}
}

func lookup(set string, vmap bool) *expr.Lookup {
	return &expr.Lookup{SourceRegister: reg32_00, SetName: set, IsDestRegSet: vmap}
}

func verdict(k expr.VerdictKind, chain string) *expr.Verdict {
	return &expr.Verdict{Kind: k, Chain: chain}
}

// ipsDstNAT is the conntrack status bit IPS_DST_NAT (linux/netfilter/nf_conntrack_common.h).
const ipsDstNAT = 1 << 5

// dnatSpread: "dnat ip to ip daddr . meta l4proto . th dport . numgen
// random mod n map @set". The key, the service key then the random
// index, is built in the 4-byte registers from NFT_REG32_00; the lookup
// writes the endpoint, address then port, to register 2, whence the NAT
// takes them (for IPv6 register 2 overlaps the key, which the lookup
// reads before it writes).
func dnatSpread(f family, n uint32, set string) []expr.Any {
	words := f.addrLen() / 4
	return append(serviceKey(f),
		&expr.Numgen{Register: reg32_00 + words + 2, Modulus: n, Type: unix.NFT_NG_RANDOM},
		&expr.Lookup{SourceRegister: reg32_00, SetName: set, DestRegister: reg2, IsDestRegSet: true},
		// Register 2 is NFT_REG32_04 to _07; the port follows the address.
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: uint32(f.nfproto()), RegAddrMin: reg2, RegProtoMin: reg32_00 + 4 + f.addrLen()/4, Specified: true},
	)
}

// endpointKeyBytes is the key of an endpoints map element: the service
// key of the address, protocol and port, then the index, as the
// registers hold them (the index in host order).
func endpointKeyBytes(a netip.Addr, p lb.Protocol, port uint16, i uint32) []byte {
	return binary.NativeEndian.AppendUint32(serviceKeyBytes(a, p, port), i)
}

// endpointBytes is the value of an endpoints map element: the address,
// then the port padded to 4 bytes.
func endpointBytes(to netip.AddrPort) []byte {
	v := addrBytes(to.Addr())
	v = binary.BigEndian.AppendUint16(v, to.Port())
	return append(v, 0, 0)
}
