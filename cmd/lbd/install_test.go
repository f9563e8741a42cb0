package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeInstall: `make install DESTDIR=...` puts the binary, the units,
// the cron and logrotate files and an example /etc/default/lbd in place,
// with the binary's path rewritten where PREFIX asks.
func TestMakeInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds lbd: skipped with -short")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skipf("SKIP: make is not installed: %v", err)
	}
	dest := t.TempDir()
	cmd := exec.Command("make", "-C", "../..", "install", "DESTDIR="+dest, "PREFIX=/opt/lbd", "BIN="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	for _, f := range []struct {
		path string
		mode os.FileMode
		has  string
	}{
		{"opt/lbd/sbin/lbd", 0o755, ""},
		{"etc/systemd/system/lbd.service", 0, "ExecStart=/opt/lbd/sbin/lbd run"},
		{"etc/systemd/system/haproxy.service.d/10-lbd.conf", 0, "After=lbd.service"},
		{"etc/logrotate.d/lbd", 0, "/var/log/loadbalancer.log"},
		{"etc/default/lbd", 0o600, "LBD_"},
		{"opt/lbd/share/lbd/cron.d-lbd", 0, "/opt/lbd/sbin/lbd"},
	} {
		p := filepath.Join(dest, f.path)
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("not installed: %v", err)
			continue
		}
		if f.mode != 0 && fi.Mode().Perm() != f.mode {
			t.Errorf("%s: mode %v, want %v", f.path, fi.Mode().Perm(), f.mode)
		}
		if b, _ := os.ReadFile(p); f.has != "" && !strings.Contains(string(b), f.has) {
			t.Errorf("%s lacks %q", f.path, f.has)
		}
	}
}
