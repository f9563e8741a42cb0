package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lbd/lbd/hack/lab"
)

// TestLogrotateConfig runs logrotate with hack/logrotate/lbd on a log in a
// temporary directory, where logrotate is installed.
func TestLogrotateConfig(t *testing.T) {
	bin, err := exec.LookPath("logrotate")
	if err != nil {
		t.Skip("SKIPPED: logrotate not installed (apt-get install logrotate); hack/logrotate/lbd is not checked")
	}
	lab.RequireRoot(t) // logrotate's "create ... root adm" chowns
	dir := t.TempDir()
	b, err := os.ReadFile("../../hack/logrotate/lbd")
	if err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "loadbalancer.log")
	conf := strings.ReplaceAll(string(b), "/var/log/loadbalancer.log", log)
	if conf == string(b) {
		t.Fatal("hack/logrotate/lbd does not name /var/log/loadbalancer.log")
	}
	os.WriteFile(filepath.Join(dir, "lbd"), []byte(conf), 0o644)
	os.WriteFile(log, []byte("a line\n"), 0o640)
	out, err := exec.Command(bin, "-v", "-f", "-s", filepath.Join(dir, "state"), filepath.Join(dir, "lbd")).CombinedOutput()
	if err != nil {
		t.Fatalf("logrotate: %v\n%s", err, out)
	}
	if got, _ := os.ReadFile(log + ".1"); string(got) != "a line\n" {
		t.Errorf("rotated file holds %q\n%s", got, out)
	}
	if fi, err := os.Stat(log); err != nil || fi.Size() != 0 || fi.Mode().Perm() != 0o640 {
		t.Errorf("new log file: %v %v, want empty, 0640\n%s", fi, err, out)
	}
	if !strings.Contains(string(out), "running postrotate script") {
		t.Errorf("postrotate did not run:\n%s", out)
	}
}
