package nft

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/lbd/lbd/hack/lab"
	"github.com/lbd/lbd/internal/testkit"
	"github.com/lbd/lbd/lb"
)

var nsSeq atomic.Int64

// nsPrefix starts the name of every namespace these tests make.
const nsPrefix = "lbd-nfp-t"

// newNetns creates an empty network namespace lbd-nfp-t<pid>-<n> and
// removes it when tb ends. Leftovers of earlier runs are swept first.
func newNetns(tb testing.TB) string {
	tb.Helper()
	testkit.RequireRoot(tb)
	sweepOnce(tb)
	name := fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), nsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		tb.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	tb.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	return name
}

var swept atomic.Bool

// sweepOnce removes lbd-nfp-t* namespaces and lbd-nfpt* labs of
// processes that are gone.
func sweepOnce(tb testing.TB) {
	if swept.Swap(true) {
		return
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	pid := fmt.Sprint(os.Getpid())
	for _, l := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(l), " ")
		switch {
		case strings.HasPrefix(name, nsPrefix) && !strings.HasPrefix(name, nsPrefix+pid+"-"):
			tb.Logf("removing leftover namespace %s", name)
			exec.Command("ip", "netns", "del", name).Run()
		case strings.HasPrefix(name, "lbd-"+labPrefix) && !strings.HasPrefix(name, "lbd-"+labPrefix+pid+"-"):
			labName, _, _ := strings.Cut(strings.TrimPrefix(name, "lbd-"), "-")
			tb.Logf("removing leftover lab %s", labName)
			lab.Sweep(labName)
		}
	}
}

// labPrefix starts the lab names of these tests ("nfpt<pid>"); lab names
// allow no dash.
const labPrefix = "nfpt"

// nsBackend creates a Backend inside ns.
func nsBackend(tb testing.TB, ns string, opts Options) *Backend {
	tb.Helper()
	var b *Backend
	err := lab.InNS(ns, func() error {
		var err error
		b, err = New(opts, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// svc returns a one-port service with the given endpoints.
func svc(name string, port, target uint16, proto lb.Protocol, pods []netip.Addr, vips ...string) lb.Service {
	s := lb.Service{Namespace: "default", Name: name, Type: "LoadBalancer",
		Ports: []lb.Port{{Port: port, Protocol: proto, TargetPort: fmt.Sprint(target)}}}
	for _, v := range vips {
		s.ExternalIPs = append(s.ExternalIPs, netip.MustParseAddr(v))
	}
	for _, p := range pods {
		s.Ports[0].Endpoints = append(s.Ports[0].Endpoints, lb.Endpoint{IP: p, Port: target, Ready: true, Serving: true})
	}
	s.Normalize()
	return s
}

// creates returns one Create change per service.
func creates(svcs []lb.Service) []lb.Change {
	out := make([]lb.Change, len(svcs))
	for i := range svcs {
		out[i] = lb.Change{Kind: lb.Create, New: &svcs[i]}
	}
	return out
}
