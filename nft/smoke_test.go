package nft

import (
	"net/netip"
	"testing"
	"time"

	"github.com/lbd/lbd/hack/lab"
	"github.com/lbd/lbd/lb"
)

func TestSmoke(t *testing.T) {
	ns := newNetns(t)
	b := nsBackend(t, ns, DefaultOptions())
	pods := []netip.Addr{netip.MustParseAddr("10.246.82.2"), netip.MustParseAddr("10.246.82.6")}
	a := svc("a", 80, 8080, lb.TCP, pods, "192.168.121.201", "fd00::1")
	a.Affinity, a.AffinityTimeout = lb.AffinityClientIP, time.Minute
	a.SourceRanges = []netip.Prefix{netip.MustParsePrefix("192.168.121.0/24")}
	d := svc("d", 53, 5353, lb.UDP, nil, "192.168.121.201")
	desired := []lb.Service{a, d}
	err := lab.InNS(ns, func() error { _, err := b.Apply(t.Context(), desired, creates(desired)); return err })
	if err != nil {
		t.Fatal(err)
	}
	t.Log(nftIn(t, ns, "list", "ruleset"))
}
