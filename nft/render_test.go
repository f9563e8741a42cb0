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

// A change of one service's endpoints touches only that service's map
// elements: a change of their number moves them to the endpoints map of
// the new number and the dispatch element to its spread chain; no chain
// is touched. A new service adds its elements only; its spread chain is
// added by tx.spreads when it is the first of its count.
func TestDiffTouchesOnlyTheChange(t *testing.T) {
	svcs := goldenServices()
	opts := DefaultOptions()
	old := svcs[0]
	nw := svc("web", 80, 8080, lb.TCP, []netip.Addr{pod0, pod1}, "192.168.121.201")
	var ch tx
	oldO, newO := renderService(&old, opts), renderService(&nw, opts)
	ch.diff(oldO, newO)
	sets := func(es []Element) map[string]int {
		m := map[string]int{}
		for _, e := range es {
			m[e.Set]++
		}
		return m
	}
	if d := cmp.Diff(map[string]int{EndpointsMap("default/web:80/TCP", 3, false): 3, ServicesMap4: 1}, sets(ch.delElements)); d != "" {
		t.Errorf("endpoint removed: deleted elements (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string]int{EndpointsMap("default/web:80/TCP", 2, false): 2, ServicesMap4: 1}, sets(ch.addElements)); d != "" {
		t.Errorf("endpoint removed: added elements (-want +got):\n%s", d)
	}
	if len(ch.fillChains)+len(ch.addChains)+len(ch.delChains)+len(ch.addSets)+len(ch.delSets) != 0 {
		t.Errorf("endpoint removed: %+v, want no chain or set touched", ch)
	}
	if d := cmp.Diff([]spreadKey{newSpreadKey("default/web:80/TCP", ipv4, 3)}, oldO.spreads, cmp.AllowUnexported(spreadKey{})); d != "" {
		t.Errorf("old spreads (-want +got):\n%s", d)
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
	if len(add.addElements) != 2 || len(add.addChains)+len(add.fillChains)+len(add.delChains)+len(add.delElements) != 0 {
		t.Errorf("create: %+v, want its endpoint and dispatch elements only", add)
	}
	var del tx
	del.diff(renderService(&n, opts), serviceObjects{})
	if len(del.delElements) != 2 || len(del.delChains)+len(del.addChains)+len(del.addElements) != 0 {
		t.Errorf("delete: %+v", del)
	}
	var none tx
	none.diff(renderService(&old, opts), renderService(&old, opts))
	if !none.empty() {
		t.Errorf("no change: %+v, want empty", none)
	}
}

// A spread chain and its map are added with the first service port of
// their count and deleted with the last, after the chains that may go to
// them; counts that stay above zero touch nothing.
func TestTxSpreads(t *testing.T) {
	opts := DefaultOptions()
	three, two, one := spreadKey{ipv4, 3, 0}, spreadKey{ipv4, 2, 5}, spreadKey{ipv6, 1, 0}
	var t1 tx
	t1.delChains = []string{"svc-A"}
	after := t1.spreads(map[spreadKey]int{three: 1, two: 4}, map[spreadKey]int{three: -1, two: 1, one: 1}, opts)
	if d := cmp.Diff(map[spreadKey]int{two: 5, one: 1}, after, cmp.AllowUnexported(spreadKey{})); d != "" {
		t.Errorf("counts after (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"svc-A", three.chain()}, t1.delChains); d != "" {
		t.Errorf("deleted chains (-want +got):\n%s", d)
	}
	var added []string
	for _, c := range t1.addChains {
		added = append(added, c.Name)
	}
	for _, s := range t1.addSets {
		added = append(added, s.Name)
	}
	if d := cmp.Diff([]string{one.chain(), one.mapName()}, added); d != "" {
		t.Errorf("added (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{three.mapName()}, t1.delSets); d != "" {
		t.Errorf("deleted sets (-want +got):\n%s", d)
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
	vip := netip.AddrFrom16([16]byte{0x20, 1, 0xd, 0xb8, 15: 1})
	for i := range elementsPerMessage {
		elems = append(elems, Element{Set: EndpointsMap("x", elementsPerMessage, true), Addr: vip, Proto: lb.SCTP, Port: 65535, Index: uint32(i), To: netip.AddrPortFrom(pod6, 65535)})
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
