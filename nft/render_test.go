package nft

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"

	"github.com/lbd/lbd/internal/testkit"
	"github.com/lbd/lbd/lb"
)

var (
	pod0 = netip.MustParseAddr("10.246.82.2")
	pod1 = netip.MustParseAddr("10.246.82.6")
	pod2 = netip.MustParseAddr("10.246.92.8")
	pod6 = netip.MustParseAddr("fd00:246::2")
)

func goldenServices() []lb.Service {
	web := svc("web", 80, 8080, lb.TCP, []netip.Addr{pod0, pod1, pod2}, "192.168.121.201")
	dns := svc("dns", 53, 5353, lb.UDP, nil, "192.168.121.201")
	sctp := svc("sig", 3868, 3868, lb.SCTP, []netip.Addr{pod0}, "192.168.121.202")
	sticky := svc("sticky", 81, 80, lb.TCP, []netip.Addr{pod0, pod1}, "192.168.121.201")
	sticky.Affinity, sticky.AffinityTimeout = lb.AffinityClientIP, 10*time.Minute
	ranged := svc("ranged", 82, 80, lb.TCP, []netip.Addr{pod0}, "192.168.121.201")
	ranged.SourceRanges = []netip.Prefix{netip.MustParsePrefix("192.168.121.0/25"), netip.MustParsePrefix("203.0.113.0/24")}
	dual := svc("dual", 443, 8443, lb.TCP, []netip.Addr{pod0, pod6}, "192.168.121.203", "2001:db8::1")
	clash := svc("clash", 80, 80, lb.TCP, []netip.Addr{pod1}, "192.168.121.201")
	hidden := svc("hidden", 80, 80, lb.TCP, []netip.Addr{pod1})
	return []lb.Service{web, dns, sctp, sticky, ranged, dual, clash, hidden}
}

func TestRender(t *testing.T) {
	rs := Render(goldenServices(), DefaultOptions())
	want := []lb.Skipped{{Key: "default/clash", Reason: "192.168.121.201:80/TCP is already served by default/web"}}
	if d := cmp.Diff(want, rs.Skipped); d != "" {
		t.Errorf("skipped (-want +got):\n%s", d)
	}
	testkit.Golden(t, []byte(rs.Text()))
}

func TestRenderNoMasquerade(t *testing.T) {
	o := DefaultOptions()
	o.Masquerade, o.Table = false, "lbd2"
	testkit.Golden(t, []byte(Render(goldenServices()[:1], o).Text()))
}

func TestOptionsValidate(t *testing.T) {
	for _, bit := range []int{-1, 14, 15, 32} {
		o := DefaultOptions()
		o.MasqueradeBit = bit
		if o.Validate() == nil {
			t.Errorf("bit %d: Validate = nil, want an error", bit)
		}
	}
	if err := DefaultOptions().Validate(); err != nil {
		t.Errorf("DefaultOptions: %v", err)
	}
}

// A change of one service's endpoints touches only that service's
// endpoints map elements, and its chain only when their number changes;
// a new service adds its chain and elements only.
func TestDiffTouchesOnlyTheChange(t *testing.T) {
	svcs := goldenServices()
	opts := DefaultOptions()
	old := svcs[0]
	nw := svc("web", 80, 8080, lb.TCP, []netip.Addr{pod0, pod1}, "192.168.121.201")
	var ch tx
	ch.diff(renderService(&old, opts), renderService(&nw, opts))
	chain := ServicePortChain("default/web:80/TCP", false)
	if len(ch.fillChains) != 1 || ch.fillChains[0].Name != chain || len(ch.delElements) != 1 || ch.delElements[0].Index != 2 ||
		len(ch.addChains)+len(ch.delChains)+len(ch.addElements)+len(ch.addSets)+len(ch.delSets) != 0 {
		t.Errorf("endpoint removed: %+v, want only %s refilled and its endpoint 2 deleted", ch, chain)
	}
	moved := svc("web", 80, 8080, lb.TCP, []netip.Addr{pod0, pod1, pod2}, "192.168.121.201")
	moved.Ports[0].Endpoints[0].Port = 9000
	var mv tx
	mv.diff(renderService(&old, opts), renderService(&moved, opts))
	if len(mv.delElements) != 1 || len(mv.addElements) != 1 || mv.addElements[0].To.Port() != 9000 ||
		len(mv.fillChains)+len(mv.addChains)+len(mv.delChains)+len(mv.addSets)+len(mv.delSets) != 0 {
		t.Errorf("endpoint port changed: %+v, want one endpoints map element replaced and no chain touched", mv)
	}
	var add tx
	n := svc("new", 90, 90, lb.UDP, []netip.Addr{pod2}, "192.168.121.209")
	add.diff(serviceObjects{}, renderService(&n, opts))
	if len(add.addChains) != 1 || len(add.addElements) != 1 || len(add.fillChains)+len(add.delChains)+len(add.delElements) != 0 {
		t.Errorf("create: %+v", add)
	}
	var del tx
	del.diff(renderService(&n, opts), serviceObjects{})
	if len(del.delChains) != 1 || len(del.delElements) != 1 || len(del.addChains)+len(del.addElements) != 0 {
		t.Errorf("delete: %+v", del)
	}
	var none tx
	none.diff(renderService(&old, opts), renderService(&old, opts))
	if !none.empty() {
		t.Errorf("no change: %+v, want empty", none)
	}
}

// The largest element messages fit the 16-bit length of their element
// list: IPv6 dispatch elements with their verdicts, and IPv6 endpoints.
func TestBatchElementListFits(t *testing.T) {
	var elems []Element
	for i := range elementsPerMessage {
		a := netip.AddrFrom16([16]byte{0x20, 1, 0xd, 0xb8, 15: byte(i)})
		elems = append(elems, Element{Set: ServicesMap6, Addr: a, Proto: lb.SCTP, Port: 65535, Chain: ServicePortChain(fmt.Sprint(i), true)})
	}
	ch := ServicePortChain("x", true)
	for i := range elementsPerMessage {
		elems = append(elems, Element{Set: EndpointsMap(ch, true), Chain: ch, Index: uint32(i), To: netip.AddrPortFrom(pod6, 65535), id: chainID(ch)})
	}
	tx := &tx{addElements: elems}
	b, err := tx.marshal(&nftables.Table{Name: "lbd", Family: nftables.TableFamilyINet})
	if err != nil {
		t.Fatal(err)
	}
	if b.msgs != 4 {
		t.Errorf("%d messages, want 4 (begin, two element lists, end)", b.msgs)
	}
}
