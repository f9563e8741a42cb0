package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestTwoLBLab builds a two-LB lab and checks that each LB reaches the
// master, the client and every pod (which see each LB's own flannel0
// address), that the LBs reach each other over sync0, and that nothing
// is left in the host namespace after Close.
func TestTwoLBLab(t *testing.T) {
	RequireRoot(t)
	const name = "ha2twolb"
	before := hostNet(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	l, err := Start(ctx, Options{Name: name, Pods: 2, LBs: 2, Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	if err := l.StartPods(ctx); err != nil {
		t.Fatalf("StartPods: %v", err)
	}
	refused := func(ns string, to netip.Addr) {
		t.Helper()
		_, err := l.Dial(ctx, ns, "tcp", netip.AddrPortFrom(to, 1).String())
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial %s from %s: got %v, want connection refused", to, ns, err)
		}
	}
	lbs := []struct {
		ns              string
		infra, ext, pod netip.Addr
		sync, otherSync netip.Addr
	}{
		{l.LBNS, LBInfraIP, LBExternalIP, FlannelIP.Addr(), SyncIPs[0].Addr(), SyncIPs[1].Addr()},
		{l.LB2NS, LB2InfraIP, LB2ExternalIP, LB2FlannelIP.Addr(), SyncIPs[1].Addr(), SyncIPs[0].Addr()},
	}
	for _, lb := range lbs {
		refused(l.ClientNS, lb.ext)
		refused(l.MasterNS, lb.infra)
		refused(lb.ns, l.MasterIP)
		refused(lb.ns, lb.otherSync)
		hc := l.HTTPClient(lb.ns)
		for i, ip := range l.PodIPs {
			resp, err := hc.Get(fmt.Sprintf("http://%s/", netip.AddrPortFrom(ip, 80)))
			if err != nil {
				t.Errorf("GET pod %s from %s: %v", ip, lb.ns, err)
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if d := cmp.Diff(l.PodNames[i]+"\n", string(body)); d != "" {
				t.Errorf("pod %s from %s (-want +got):\n%s", ip, lb.ns, d)
			}
			if ra := resp.Header.Get("X-Remote-Addr"); !strings.HasPrefix(ra, lb.pod.String()+":") {
				t.Errorf("pod %s saw %q from %s, want its flannel0 address %s", ip, ra, lb.ns, lb.pod)
			}
		}
	}
	// The pod network stays closed to the client and the master.
	if _, err := l.Dial(ctx, l.ClientNS, "tcp", netip.AddrPortFrom(l.PodIPs[0], 80).String()); !errors.Is(err, syscall.ENETUNREACH) {
		t.Errorf("client to pod: got %v, want network unreachable", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	out, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	if strings.Contains(string(out), "lbd-"+name+"-") {
		t.Errorf("namespaces left after Close:\n%s", out)
	}
	if d := cmp.Diff(before, hostNet(t)); d != "" {
		t.Errorf("host namespace links/routes changed (-before +after):\n%s", d)
	}
}
