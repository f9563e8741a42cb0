package haproxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lbd/lbd/internal/testkit"
	"github.com/lbd/lbd/lb"
)

// TestLabMasterReexecLimit confirms, with a real haproxy in master-worker
// mode (as lbd's systemd drop-in and the lab run it), why reloads fail
// past some thousands of service files: haproxy 2.6 keeps the path of
// every file it loaded in one environment string, HAPROXY_CFGFILES, and
// re-executes its master with it, on every reload and already once at
// start (into its wait mode); past MAX_ARG_STRLEN (128 KiB) execve fails
// and the master exits, leaving no master CLI to reload through. It then
// checks that lbd's
// guard refuses exactly such a set before publishing it. haproxy binds
// only unix sockets here: no address, no traffic.
func TestLabMasterReexecLimit(t *testing.T) {
	testkit.RequireRoot(t)
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Skipf("SKIP: haproxy is not installed: %v", err)
	}
	dir := t.TempDir()
	svcDir := filepath.Join(dir, "services.d")
	if err := os.Mkdir(svcDir, 0o755); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, "base.cfg")
	master := filepath.Join(dir, "master.sock")
	write(t, base, "global\n    master-worker\n    stats socket "+filepath.Join(dir, "admin.sock")+" mode 600 level admin expose-fd listeners\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1m\n    timeout server 1m\n")
	files := Files{}
	n := 0
	for i := 0; n <= MaxArgStrlen; i++ {
		name := fmt.Sprintf("default_service-number-%05d.cfg", i)
		files[name] = fmt.Appendf(nil, "backend lbd_default_service-number-%05d_80_tcp\n    server s1 127.0.0.1:1 disabled\n", i)
		n += len(svcDir) + 1 + len(name) + 1
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(svcDir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d files, HAPROXY_CFGFILES about %d bytes", len(files), n)

	logf, err := os.Create(filepath.Join(dir, "haproxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("haproxy", "-W", "-S", master, "-f", base, "-f", svcDir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); <-exited })
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("haproxy's master still runs 30 s after starting with %d files; want it dead of E2BIG", len(files))
	}
	out, _ := os.ReadFile(logf.Name())
	if !strings.Contains(string(out), "Failed to reexecute the master process") || !strings.Contains(string(out), "Argument list too long") {
		t.Fatalf("haproxy's master exited, but its log does not say it failed to re-execute:\n%s", out)
	}
	t.Logf("haproxy: %s", strings.TrimSpace(string(out)))

	// Laid out one file per service (sharding off), lbd refuses such a
	// set before publishing it.
	b, c := fakeBackend(t, false)
	b.tree = newTree(svcDir + "-lbd")
	b.o.FilesPerService = -1
	b.o = b.o.withDefaults()
	var svcs []lb.Service
	for i := range len(files) {
		s := nginx()
		s.Name = fmt.Sprintf("service-number-%05d", i)
		svcs = append(svcs, s)
	}
	lb.SortServices(svcs)
	_, err = b.Apply(context.Background(), svcs, nil)
	if !errors.Is(err, ErrTooManyFiles) {
		t.Fatalf("Apply of %d services, a file each: %v, want ErrTooManyFiles", len(svcs), err)
	}
	if c.reloads != 0 || c.checks != 0 {
		t.Errorf("Apply refused the set after %d checks and %d reloads, want none", c.checks, c.reloads)
	}
}

// TestLabReloadManyServices proves that lbd reloads a real haproxy master
// (master-worker mode, as Debian's unit runs it) serving twice as many
// services as one file each would let it re-execute with: the set is
// written as shard files, so HAPROXY_CFGFILES stays short and the master
// survives. With one file per service (FilesPerService -1) lbd must refuse
// the same set (TestLabMasterReexecLimit shows haproxy's master dying of
// it). It prints the reload's cost.
//
// 3,000 services, not 10,000: haproxy holds a descriptor per listener and
// per server slot (5 per service here) besides two per connection, and
// this machine's hard RLIMIT_NOFILE is 20,000 and cannot be raised
// (10,000 services want about 52,000; lbd's systemd drop-in allows
// 1,048,576). The layout is the same: 256 shards at most.
func TestLabReloadManyServices(t *testing.T) {
	testkit.RequireRoot(t)
	h := startLabHaproxy(t, "hpshard")
	// 10,000 services' health checks would load the machine; one a minute each.
	h.b.o.CheckInterval = time.Minute
	// haproxy wants a descriptor per listener and server on top of two per
	// connection; this machine's hard limit is 20,000 (a systemd unit's is
	// 524,288) and cannot be raised here. So few connections, and one
	// service in a hundred with a ready endpoint.
	base, err := os.ReadFile(h.b.o.BasePath)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeAtomic(h.b.o.BasePath, append(base, "\nglobal\n    maxconn 1000\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	ext := netip.MustParseAddr("192.168.121.202")
	const n = 3000
	svcs := make([]lb.Service, 0, n+1)
	for i := range n {
		ready := -1 // none
		if i%100 == 99 {
			ready = 0
		}
		svcs = append(svcs, labService(h.l, fmt.Sprintf("svc-%05d", i), ext, map[uint16]uint16{uint16(20000 + 3*i): 8080}, ready))
	}
	lb.SortServices(svcs)

	oo := testOptions(t.TempDir())
	oo.FilesPerService = -1
	off := New(oo, slog.New(slog.DiscardHandler))
	off.bindable = bindAnything
	if _, err := off.Apply(t.Context(), svcs, nil); !errors.Is(err, ErrTooManyFiles) {
		t.Fatalf("Apply of %d services, a file each: %v, want ErrTooManyFiles", n, err)
	}

	before, err := (masterCLI{path: h.b.o.MasterSocket}).showProc(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	h.apply(t, svcs...)
	first := time.Since(t0)
	ents, err := os.ReadDir(h.b.o.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) > DefaultShards+1 {
		t.Errorf("%d files in the services directory for %d services, want at most %d shards", len(ents), n, DefaultShards)
	}
	// A structural change: one more service, one more reload.
	svcs = append(svcs, labService(h.l, "svc-last", ext, map[uint16]uint16{19999: 8080}, 1))
	lb.SortServices(svcs)
	t1 := time.Now()
	h.apply(t, svcs...)
	second := time.Since(t1)
	after, err := (masterCLI{path: h.b.o.MasterSocket}).showProc(t.Context())
	if err != nil {
		t.Fatalf("haproxy's master no longer answers after reloading %d services: %v", n+1, err)
	}
	if after.master != before.master || after.reloads < before.reloads+2 || h.c.reloads != 2 {
		t.Fatalf("master %d -> %d, reloads %d -> %d (lbd asked %d), want the same master and 2 reloads", before.master, after.master, before.reloads, after.reloads, h.c.reloads)
	}
	for _, addr := range []string{"192.168.121.202:19999", "192.168.121.202:28997"} {
		if got, err := h.get(t.Context(), addr); err != nil || got == "" {
			t.Errorf("GET %s after the reloads: %q, %v", addr, got, err)
		}
	}
	fmt.Printf("haproxy reload at %d services (sharded): %d files; first publish (render, write, haproxy -c, reload) %.2fs, one service added %.2fs; master re-executed, same PID\n",
		n, len(ents), first.Seconds(), second.Seconds())
}
