package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lbd/lbd/cli"
	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/store"
)

// statusDB makes a store whose last sync ran backend, with web programmed
// and skip skipped.
func statusDB(t *testing.T, backend string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "lbd.db")
	db, err := store.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	mk := func(name, ip string) lb.Service {
		s := lb.Service{Namespace: "default", Name: name, Type: "ClusterIP", ExternalIPs: []netip.Addr{netip.MustParseAddr(ip)},
			Ports: []lb.Port{{Port: 80, Protocol: lb.TCP, TargetPort: "80", Endpoints: []lb.Endpoint{{IP: netip.MustParseAddr("10.246.0.1"), Port: 80, Ready: true, Serving: true}}}}}
		s.Normalize()
		return s
	}
	web, skip := mk("web", "192.168.121.201"), mk("skip", "192.168.121.202")
	rec := lb.SyncRecord{Started: time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC), Backend: backend, Result: "ok", Services: 2}
	if err := db.Commit(t.Context(), backend, []lb.Service{skip, web}, []lb.Service{web}, rec); err != nil {
		t.Fatal(err)
	}
	if err := db.SaveStates(t.Context(), backend, []lb.ServiceState{
		{Key: "default/skip", State: lb.StateSkipped, Reason: "cannot bind 192.168.121.202:80", Spec: "x"},
		{Key: "default/web", State: lb.StateProgrammed},
	}); err != nil {
		t.Fatal(err)
	}
	return path
}

func runStatus(t *testing.T, args ...string) string {
	t.Helper()
	var out, errs strings.Builder
	code := run(t.Context(), append([]string{"status", "--log-file", ""}, args...), noEnv, &out, &errs)
	if code != cli.ExitOK {
		t.Fatalf("lbd status %v: exit %d: %s", args, code, errs.String())
	}
	return out.String()
}

func TestStatusShowsStates(t *testing.T) {
	db := statusDB(t, "haproxy")
	out := runStatus(t, "--db", db, "--backend", "haproxy")
	for _, want := range []string{
		"ENDPOINTS      STATE",
		"10.246.0.1:80  skipped",
		"10.246.0.1:80  programmed",
		"default/skip  skipped          cannot bind 192.168.121.202:80",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	var js struct {
		Backend string            `json:"backend"`
		States  []lb.ServiceState `json:"states"`
	}
	if err := json.Unmarshal([]byte(runStatus(t, "--db", db, "--backend", "haproxy", "-o", "json")), &js); err != nil {
		t.Fatal(err)
	}
	if js.Backend != "haproxy" || len(js.States) != 2 || js.States[0].State != lb.StateSkipped {
		t.Errorf("status -o json: backend %q states %+v", js.Backend, js.States)
	}
}

// Without --backend, status and plan look at the backend of the last sync
// and say so; --backend or LBD_BACKEND wins.
func TestStatusUsesTheLastSyncsBackend(t *testing.T) {
	db := statusDB(t, "iptables")
	out := runStatus(t, "--db", db)
	if !strings.HasPrefix(out, "backend: iptables (of the last sync)\n") || !strings.Contains(out, "programmed") {
		t.Errorf("status without --backend:\n%s", out)
	}
	out = runStatus(t, "--db", db, "--backend", "haproxy")
	if strings.Contains(out, "of the last sync") || strings.Contains(out, "programmed") {
		t.Errorf("status --backend haproxy shows iptables' states:\n%s", out)
	}
	var stdout, stderr strings.Builder
	env := envMap(map[string]string{"LBD_BACKEND": "haproxy"})
	if code := run(t.Context(), []string{"status", "--db", db, "--log-file", ""}, env, &stdout, &stderr); code != cli.ExitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if strings.Contains(stdout.String(), "of the last sync") {
		t.Errorf("LBD_BACKEND is not taken as given:\n%s", stdout.String())
	}

	// plan picks its backend before wiring it.
	a := &app{cfg: cli.Config{DB: db, Backend: "haproxy", Given: map[string]bool{}}}
	note, err := a.lastBackendOf(t.Context())
	if err != nil || note != "backend: iptables (of the last sync)" || a.cfg.Backend != "iptables" {
		t.Errorf("lastBackendOf = %q, %v; backend %q", note, err, a.cfg.Backend)
	}
	a = &app{cfg: cli.Config{DB: filepath.Join(t.TempDir(), "none.db"), Backend: "haproxy"}}
	if note, err := a.lastBackendOf(t.Context()); err != nil || note != "" || a.cfg.Backend != "haproxy" {
		t.Errorf("lastBackendOf without a store = %q, %v; backend %q", note, err, a.cfg.Backend)
	}
}

// The last sync's error may hold the master's stderr, written by any lbd
// version: status must not send its control characters to the terminal.
func TestStatusEscapesLastError(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lbd.db")
	db, err := store.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	rec := lb.SyncRecord{Started: time.Now(), Backend: "iptables", Result: "error", Err: "ssh m: exit status 1: stderr: x\n\x1b[2Jlast sync: ok"}
	if err := db.RecordSync(ctx, rec); err != nil {
		t.Fatal(err)
	}
	db.Close()
	var stdout, stderr strings.Builder
	if code := run(ctx, []string{"status", "--db", path}, noEnv, &stdout, &stderr); code != 0 {
		t.Fatalf("status exited %d: %s", code, stderr.String())
	}
	out := stdout.String()
	if strings.Contains(out, "\x1b") || strings.Count(out, "\nlast sync") != 1 {
		t.Errorf("status printed the raw error:\n%s", out)
	}
	if !strings.Contains(out, `stderr: x\n\x1b[2Jlast sync: ok`) {
		t.Errorf("status lacks the escaped error:\n%s", out)
	}
}
