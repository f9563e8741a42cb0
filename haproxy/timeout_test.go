package haproxy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/internal/testkit"
	"github.com/lbd/lbd/lb"
)

func TestReloadTimeoutFor(t *testing.T) {
	tests := []struct {
		set      time.Duration
		services int
		want     time.Duration
	}{
		{0, 0, 10 * time.Second},
		{0, 1000, 12 * time.Second},
		{0, 10000, 30 * time.Second},
		{5 * time.Second, 10000, 5 * time.Second},
	}
	for _, tt := range tests {
		o := Options{ReloadTimeout: tt.set}
		if got := o.ReloadTimeoutFor(tt.services); got != tt.want {
			t.Errorf("Options{ReloadTimeout: %v}.ReloadTimeoutFor(%d) = %v, want %v", tt.set, tt.services, got, tt.want)
		}
	}
	if got := DefaultOptions().ReloadTimeout; got != 0 {
		t.Errorf("DefaultOptions().ReloadTimeout = %v, want 0 (scale with the services)", got)
	}
}

// TestReloadTimeoutKeepsFilesAndWaits: a reload that times out leaves the
// new files in place (haproxy may be reading them) and the marker behind;
// while the master is still re-executing no other reload starts; once it
// shows the new worker the next Apply confirms without reloading. A
// pending reload that the master reports failed is rolled back then.
func TestReloadTimeoutKeepsFilesAndWaits(t *testing.T) {
	ctx := context.Background()
	web := nginx()
	changed := nginx()
	changed.Ports[0].Endpoints = changed.Ports[0].Endpoints[:1]
	idle := procState{master: 100, reloads: 1, workers: []int{200}}
	tests := []struct {
		name      string
		after     procState // what show proc says once the master answers again
		wantErr   bool
		wantFiles lb.Service
	}{
		{name: "the reload took", after: procState{master: 100, reloads: 2, workers: []int{201}}, wantFiles: changed},
		{name: "the reload failed", after: procState{master: 100, reloads: 2, failed: 1, workers: []int{200}}, wantErr: true, wantFiles: web},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, c := fakeBackend(t, false)
			state, stateErr := idle, error(nil)
			b.probe = func(context.Context) (procState, error) { return state, stateErr }
			b.alive = func(pid int) bool { return pid == 100 }
			if _, err := b.Apply(ctx, []lb.Service{web}, nil); err != nil {
				t.Fatal(err)
			}
			c.reloadErr = &ReloadError{Mode: "master CLI", Pending: true, Err: errors.New("no new worker within 1ms")}
			_, err := b.Apply(ctx, []lb.Service{changed}, nil)
			var re *ReloadError
			if !errors.As(err, &re) || !re.Pending {
				t.Fatalf("Apply with a timed-out reload: %v, want a pending *ReloadError", err)
			}
			if diff := cmp.Diff(rendered1(t, changed), onDisk(t, b)); diff != "" {
				t.Errorf("files rolled back after a timeout (-want +got):\n%s", diff)
			}
			if drift, _ := b.Verify(ctx, []lb.Service{changed}); len(drift) != 1 {
				t.Errorf("Verify after a timeout: %q, want the pending reload", drift)
			}
			c.reloadErr = nil

			// The master re-executes: its socket refuses, its PID lives.
			state, stateErr = procState{}, syscall.ECONNREFUSED
			_, err = b.Apply(ctx, []lb.Service{changed}, nil)
			if !errors.As(err, &re) || !re.Pending {
				t.Errorf("Apply while the reload runs: %v, want a pending *ReloadError", err)
			}
			if c.reloads != 2 {
				t.Errorf("reloads = %d while one was in progress, want 2 (no other started)", c.reloads)
			}

			state, stateErr = tt.after, nil
			_, err = b.Apply(ctx, []lb.Service{changed}, nil)
			if (err != nil) != tt.wantErr {
				t.Errorf("Apply after the master answered: %v, want error %v", err, tt.wantErr)
			}
			if c.reloads != 2 {
				t.Errorf("reloads = %d, want 2: the pending reload is confirmed or failed, not repeated", c.reloads)
			}
			if diff := cmp.Diff(rendered1(t, tt.wantFiles), onDisk(t, b)); diff != "" {
				t.Errorf("files (-want +got):\n%s", diff)
			}
			if _, err := os.Stat(b.tree.marker); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("marker after the outcome: %v, want it gone", err)
			}
		})
	}
}

// TestLabReloadTimeout: against a real haproxy with 1,000 services of three ports, a
// reload that times out keeps the new files; the Apply right after it
// (the master still re-executing) starts no other reload; the one after
// the master is back confirms without reloading, and haproxy serves the
// new files. haproxy counts exactly one reload.
func TestLabReloadTimeout(t *testing.T) {
	h := startLabHaproxy(t, "hpkto")
	l := h.l
	addr := netip.AddrPortFrom(l.LBExternalIP, 80).String()
	svcs := []lb.Service{labService(l, "nginx", l.LBExternalIP, map[uint16]uint16{80: 80})}
	// Enough files that a reload takes a while, few enough that haproxy
	// 2.6 can still re-execute its master: it passes every file's path in
	// one environment variable, and execve refuses one over 128 KiB.
	for i := range 1000 {
		p := uint16(20000 + 3*i)
		svcs = append(svcs, labService(l, fmt.Sprintf("b%d", i), l.LBExternalIP, map[uint16]uint16{p: 80, p + 1: 80, p + 2: 80}, 0))
	}
	lb.SortServices(svcs)
	h.apply(t, svcs...)
	m := masterCLI{path: h.b.o.MasterSocket}
	before, err := m.showProc(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	changed := append([]lb.Service(nil), svcs...)
	for i := range changed {
		if changed[i].Name == "nginx" {
			changed[i] = labService(l, "nginx", l.LBExternalIP, map[uint16]uint16{80: 80, 81: 80}, 0) // a new port: a reload
		}
	}

	h.b.o.ReloadTimeout = time.Nanosecond
	start := time.Now()
	_, err = h.b.Apply(t.Context(), changed, nil)
	var re *ReloadError
	if !errors.As(err, &re) || !re.Pending {
		t.Fatalf("Apply with a 1ns reload timeout: %v, want a pending *ReloadError", err)
	}
	reloads := h.c.reloads
	_, err = h.b.Apply(t.Context(), changed, nil)
	if !errors.As(err, &re) || !re.Pending {
		t.Errorf("Apply %v after the timed-out one: %v, want a pending *ReloadError (reload in progress)", time.Since(start).Round(time.Millisecond), err)
	}
	if h.c.reloads != reloads {
		t.Errorf("a reload was asked while one was in progress")
	}
	testkit.WaitFor(t, time.Minute, "the master to show a new worker", func() bool {
		st, err := m.showProc(t.Context())
		return err == nil && st.reloads > before.reloads && len(st.workers) > 0 && st.workers[0] != before.workers[0]
	})
	t.Logf("reload of 1,001 services took about %v", time.Since(start).Round(10*time.Millisecond))
	h.b.o.ReloadTimeout = 0
	if _, err := h.b.Apply(t.Context(), changed, nil); err != nil {
		t.Fatalf("Apply after the master is back: %v", err)
	}
	if h.c.reloads != reloads {
		t.Errorf("the confirming Apply reloaded again")
	}
	st, err := m.showProc(t.Context())
	if err != nil || st.reloads != before.reloads+1 {
		t.Errorf("haproxy reloads %d -> %d (%v), want exactly one more", before.reloads, st.reloads, err)
	}
	// The old worker may still take a connection or two from the shared
	// listener while it stops; then the new files answer alone.
	testkit.WaitFor(t, 10*time.Second, "every answer from "+l.PodNames[0]+" (the new files)", func() bool {
		got := h.spread(t, addr, 20)
		return len(got) == 1 && got[l.PodNames[0]] == 20
	})
}
