package haproxy

import (
	"context"
	"errors"
	"fmt"
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

	// lbd refuses such a set before publishing it.
	b, c := fakeBackend(t, false)
	b.tree = newTree(svcDir + "-lbd")
	var svcs []lb.Service
	for i := range len(files) {
		s := nginx()
		s.Name = fmt.Sprintf("service-number-%05d", i)
		svcs = append(svcs, s)
	}
	lb.SortServices(svcs)
	_, err = b.Apply(context.Background(), svcs, nil)
	if !errors.Is(err, ErrTooManyFiles) {
		t.Fatalf("Apply of %d services: %v, want ErrTooManyFiles", len(svcs), err)
	}
	if c.reloads != 0 || c.checks != 0 {
		t.Errorf("Apply refused the set after %d checks and %d reloads, want none", c.checks, c.reloads)
	}
}
