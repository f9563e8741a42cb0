package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lbd/lbd/cli"
	"github.com/lbd/lbd/discovery"
	"github.com/lbd/lbd/haproxy"
	"github.com/lbd/lbd/keepalived"
	"github.com/lbd/lbd/netfilter"
	"github.com/lbd/lbd/nft"
	"github.com/lbd/lbd/store"
)

// The exit codes under the names the tests of this package use.
const (
	exitOK      = cli.ExitOK
	exitFail    = cli.ExitFail
	exitPending = cli.ExitPending
	exitHeld    = cli.ExitHeld
	exitLocked  = cli.ExitLocked
)

// noEnv is an environment with nothing set.
func noEnv(string) (string, bool) { return "", false }

// envMap is an environment holding exactly the variables of m.
func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// TestDefaults: the defaults lbd wires from its parts are the notes'
// and the parts' own.
func TestDefaults(t *testing.T) {
	c := defaults()
	if c.DB != "/opt/LoadBalancer.sqlite.db" || c.LogFile != "/var/log/loadbalancer.log" || c.PodInterface != "flannel0" ||
		c.HAProxyBase != "/etc/haproxy/haproxy-global-default.cfg" || c.MaxDelete != 0.5 || c.Backend != "haproxy" ||
		c.Kubectl != discovery.DefaultKubectl || c.HAConfig != keepalived.DefaultConfigPath || c.CheckFall != haproxy.DefaultOptions().Fall ||
		c.NFTTable != nft.DefaultOptions().Table || c.MasqBit != netfilter.DefaultOptions().MasqueradeBit {
		t.Errorf("defaults lost: %+v", c)
	}
}

// runLBD runs lbd with args and no environment.
func runLBD(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errs strings.Builder
	code := run(t.Context(), args, noEnv, &out, &errs)
	return out.String(), errs.String(), code
}

// TestHelpOnStdout: help goes to stdout, with a line for the command
// asked about, and exits 0.
func TestHelpOnStdout(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"help", "plan"}, {"plan", "--help"}} {
		out, errs, code := runLBD(t, args...)
		if code != exitOK || errs != "" || !strings.Contains(out, "Usage:") || !strings.Contains(out, "-log-level") {
			t.Errorf("lbd %v: exit %d, stderr %q, stdout lacks the usage:\n%s", args, code, errs, out)
		}
		if args[len(args)-1] == "plan" || args[0] == "plan" {
			if !strings.HasPrefix(out, "lbd plan: ") {
				t.Errorf("lbd %v: no line for plan first:\n%s", args, out)
			}
		}
	}
}

// TestErrorsOnce: a failure is one line on stderr, and is in the log
// file too; a bad flag fails before any I/O.
func TestErrorsOnce(t *testing.T) {
	dir := t.TempDir()
	logFile := filepath.Join(dir, "lbd.log")
	_, errs, code := runLBD(t, "--log-file", logFile, "--db", filepath.Join(dir, "x.db"), "--backend=bogus", "--pool=10.0.0.0/28", "--master=root@127.0.0.1:1")
	if code != exitFail || strings.Count(errs, "bogus") != 1 {
		t.Errorf("exit %d, stderr %q: want the error exactly once", code, errs)
	}
	if b, _ := os.ReadFile(logFile); !strings.Contains(string(b), "bogus") {
		t.Errorf("the log file lacks the error: %q", b)
	}
	if _, errs, _ := runLBD(t, "--log-level=loud", "--log-file="); !strings.Contains(errs, "--log-level") {
		t.Errorf("a bad --log-level is not named: %q", errs)
	}
}

// TestLockedExitCode: another lbd holding the lock is exit 4, not 1.
func TestLockedExitCode(t *testing.T) {
	db := filepath.Join(t.TempDir(), "lbd.db")
	unlock, err := store.Lock(t.Context(), db, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	_, errs, code := runLBD(t, "--log-file=", "--db", db, "--lock-wait=0s", "--pool=10.0.0.0/28", "--master=root@127.0.0.1:1", "cleanup", "--backend=iptables")
	if code != exitLocked {
		t.Errorf("exit %d (%s), want %d", code, errs, exitLocked)
	}
}

// TestCheckJSON: check -o json is one JSON document of verdicts.
func TestCheckJSON(t *testing.T) {
	out, _, _ := runLBD(t, "--log-file=", "--db", filepath.Join(t.TempDir(), "x.db"), "--master=root@127.0.0.1:1", "--ssh-timeout=100ms", "--known-hosts=/dev/null", "check", "-o", "json")
	var v struct {
		OK       bool `json:"ok"`
		Verdicts []struct {
			Check string `json:"check"`
			OK    bool   `json:"ok"`
		} `json:"verdicts"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || len(v.Verdicts) == 0 || v.OK {
		t.Errorf("check -o json: %v, %+v\n%s", err, v, out)
	}
}

// TestPlanWithoutMasterCreatesNothing: a missing --master fails before
// the database is created.
func TestPlanWithoutMasterCreatesNothing(t *testing.T) {
	db := filepath.Join(t.TempDir(), "lbd.db")
	_, errs, code := runLBD(t, "--log-file=", "--db", db, "plan")
	if code != exitFail || !strings.Contains(errs, "--master is required") {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
	if _, err := os.Stat(db); !os.IsNotExist(err) {
		t.Errorf("plan without --master created %s (%v)", db, err)
	}
}
