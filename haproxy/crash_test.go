package haproxy

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/lbd/lbd/lb"
)

// errTestCrash is what the crash hook makes publish return: lbd "died".
var errTestCrash = errors.New("test: lbd died here")

// crashAfter makes b's next publish stop dead after step, as if lbd had
// been killed there: no rollback, no cleanup.
func crashAfter(b *Backend, step string) {
	b.crash = func(s string) error {
		if s == step {
			b.crash = nil
			return errTestCrash
		}
		return nil
	}
}

// TestCrashBetweenSwapAndReloadHeals: lbd dies after the services
// directory points at the new generation and before the reload. A new
// process with the same desired state must reload, and Verify must call
// the unconfirmed reload drift.
func TestCrashBetweenSwapAndReloadHeals(t *testing.T) {
	ctx := context.Background()
	b, c := fakeBackend(t, false)
	web := nginx()
	if _, err := b.Apply(ctx, []lb.Service{web}, nil); err != nil {
		t.Fatal(err)
	}
	changed := nginx()
	changed.Ports[0].Endpoints = changed.Ports[0].Endpoints[:1]
	crashAfter(b, stepSwapped)
	if _, err := b.Apply(ctx, []lb.Service{changed}, nil); !errors.Is(err, errTestCrash) {
		t.Fatalf("Apply with a crash after the swap: %v", err)
	}
	if c.reloads != 1 {
		t.Fatalf("reloads = %d before the restart, want 1", c.reloads)
	}

	// A new process: a new Backend on the same directory.
	b2, c2 := fakeBackend(t, false)
	b2.o, b2.tree = b.o, b.tree
	drift, err := b2.Verify(ctx, []lb.Service{changed})
	if err != nil {
		t.Fatal(err)
	}
	if len(drift) != 1 || !strings.Contains(drift[0], "reload") {
		t.Errorf("Verify after the crash = %q, want one line about the unconfirmed reload", drift)
	}
	if _, err := b2.Apply(ctx, []lb.Service{changed}, nil); err != nil {
		t.Fatal(err)
	}
	if c2.reloads != 1 {
		t.Errorf("the new process reloaded %d times, want 1", c2.reloads)
	}
	if drift, _ := b2.Verify(ctx, []lb.Service{changed}); len(drift) != 0 {
		t.Errorf("Verify after the healing Apply: %q, want none", drift)
	}
	if _, err := b2.Apply(ctx, []lb.Service{changed}, nil); err != nil || c2.reloads != 1 {
		t.Errorf("a further Apply reloaded again (reloads %d, err %v)", c2.reloads, err)
	}
}

// TestLabCrashBetweenSwapAndReload: the same crash against a real
// haproxy; the new process's Apply must make haproxy serve the new
// configuration.
func TestLabCrashBetweenSwapAndReload(t *testing.T) {
	h := startLabHaproxy(t, "hpkcr")
	l := h.l
	addr := netip.AddrPortFrom(l.LBExternalIP, 80).String()
	all := labService(l, "nginx", l.LBExternalIP, map[uint16]uint16{80: 80})
	// A second port makes the change structural: endpoint-only changes go
	// through the runtime API and never swap the directory.
	one := labService(l, "nginx", l.LBExternalIP, map[uint16]uint16{80: 80, 8080: 8080}, 0)
	h.apply(t, all)
	if got := h.spread(t, addr, 30); len(got) != 3 {
		t.Fatalf("before the crash: answers from %v, want three pods", got)
	}
	crashAfter(h.b, stepSwapped)
	if _, err := h.b.Apply(t.Context(), []lb.Service{one}, nil); !errors.Is(err, errTestCrash) {
		t.Fatalf("Apply with a crash after the swap: %v", err)
	}
	if got := h.spread(t, addr, 30); len(got) != 3 {
		t.Fatalf("after the crash haproxy should still serve the old config: %v", got)
	}
	b2 := New(h.b.o, slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	b2.bindable = bindAnything
	if _, err := b2.Apply(t.Context(), []lb.Service{one}, nil); err != nil {
		t.Fatalf("Apply of the new process: %v", err)
	}
	if got := h.spread(t, addr, 30); len(got) != 1 || got[l.PodNames[0]] != 30 {
		t.Errorf("after the new process's Apply: answers %v, want all from %s", got, l.PodNames[0])
	}
}
