package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/hack/lab"
)

func TestLogFileReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "loadbalancer.log")
	a := &app{cfg: config{logFile: path, logFormat: "text"}, stderr: io.Discard}
	reopen, closer, err := a.openLogRotatable()
	if err != nil {
		t.Fatal(err)
	}
	defer closer()
	a.log.Info("before rotation")
	if err := os.Rename(path, path+".1"); err != nil { // what logrotate does
		t.Fatal(err)
	}
	a.log.Info("still the old file")
	if err := reopen(); err != nil {
		t.Fatal(err)
	}
	a.log.Info("after rotation")
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if !strings.Contains(string(old), "before rotation") || !strings.Contains(string(old), "still the old file") || strings.Contains(string(old), "after rotation") {
		t.Errorf("rotated file:\n%s", old)
	}
	if !strings.Contains(string(cur), "after rotation") || strings.Contains(string(cur), "before") {
		t.Errorf("new file:\n%s", cur)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("new file mode %v, %v; want 0640", fi.Mode(), err)
	}
}

func TestRunFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want [5]string // watch, interval, resync, debounce, metrics-addr
	}{
		{name: "defaults", args: []string{"run"}, want: [5]string{"true", "30s", "5m0s", "200ms", ""}},
		{name: "flags", args: []string{"run", "--watch=false", "--interval=10s", "--resync=1m", "--debounce=50ms", "--metrics-addr=127.0.0.1:9720"},
			want: [5]string{"false", "10s", "1m0s", "50ms", "127.0.0.1:9720"}},
		{name: "environment, as /etc/default/lbd sets it", args: []string{"run"},
			env:  map[string]string{"LBD_WATCH": "false", "LBD_INTERVAL": "1m", "LBD_RESYNC": "10m", "LBD_DEBOUNCE": "1s", "LBD_METRICS_ADDR": "127.0.0.1:9720"},
			want: [5]string{"false", "1m0s", "10m0s", "1s", "127.0.0.1:9720"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c config
			fs := newFlagSet(&c, io.Discard)
			cmd, _, err := parseArgs(fs, tt.args, envMap(tt.env))
			if err != nil || cmd != "run" {
				t.Fatalf("parseArgs = %q, %v", cmd, err)
			}
			got := [5]string{fmt.Sprint(c.watch), c.interval.String(), c.resync.String(), c.debounce.String(), c.metricsAddr}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	t.Run("bad values are refused before anything runs", func(t *testing.T) {
		for _, args := range [][]string{{"run", "--interval=0"}, {"run", "--resync=-1s"}, {"run", "--debounce=-1ms"}} {
			var stderr bytes.Buffer
			code := run(context.Background(), args, noEnv, io.Discard, &stderr)
			flagName, _, _ := strings.Cut(args[1], "=")
			if code != exitFail || !strings.Contains(stderr.String(), flagName) {
				t.Errorf("lbd %v: exit %d, stderr %q", args, code, stderr.String())
			}
		}
	})
}

// TestDefaultFile: every LBD_ setting in the example /etc/default/lbd,
// commented or not, is a flag lbd accepts with the value shown.
func TestDefaultFile(t *testing.T) {
	b, err := os.ReadFile("../../hack/default/lbd")
	if err != nil {
		t.Fatal(err)
	}
	// Every example uncommented, read the way the cron job reads it: by
	// /bin/sh with set -a. (systemd's EnvironmentFile strips the same
	// double quotes.)
	var lines []string
	for _, line := range strings.Split(string(b), "\n") {
		if l := strings.TrimPrefix(line, "#"); strings.HasPrefix(l, "LBD_") {
			lines = append(lines, l)
		}
	}
	file := filepath.Join(t.TempDir(), "lbd")
	os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o600)
	out, err := exec.Command("/bin/sh", "-c", `set -a; . "$1"; env`, "sh", file).CombinedOutput()
	if err != nil {
		t.Fatalf("sh cannot read hack/default/lbd: %v\n%s", err, out)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && strings.HasPrefix(k, "LBD_") {
			env[k] = v
		}
	}
	if len(env) < 10 {
		t.Fatalf("only %d settings found in hack/default/lbd", len(env))
	}
	var c config
	fs := newFlagSet(&c, io.Discard)
	known := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { known[envName(f.Name)] = true })
	for k := range env {
		if !known[k] {
			t.Errorf("hack/default/lbd sets %s, which is no flag", k)
		}
	}
	if _, _, err := parseArgs(fs, []string{"run"}, envMap(env)); err != nil {
		t.Errorf("hack/default/lbd does not parse: %v", err)
	}
	if c.master != "root@kubernetes-master" || c.kubectl != "sudo kubectl --kubeconfig /etc/kubernetes/admin.conf" || c.metricsAddr != "127.0.0.1:9720" {
		t.Errorf("values not as written: master %q kubectl %q metrics %q", c.master, c.kubectl, c.metricsAddr)
	}
}

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
