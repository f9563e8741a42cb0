package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantCmd  string
		wantRest []string
		check    func(c config) string // returns what is wrong, "" if fine
		wantErr  string
	}{
		{
			name: "defaults", args: nil, wantCmd: "",
			check: func(c config) string {
				if c.db != "/opt/LoadBalancer.sqlite.db" || c.logFile != "/var/log/loadbalancer.log" || c.podInterface != "flannel0" ||
					c.haproxyBase != "/etc/haproxy/haproxy-global-default.cfg" || c.maxDelete != 0.5 || c.backend != "haproxy" {
					return "notes' defaults lost"
				}
				return ""
			},
		},
		{
			name: "flags before the command", args: []string{"--backend=iptables", "--db", "/tmp/x.db", "plan"}, wantCmd: "plan",
			check: func(c config) string {
				return ifNot(c.backend == "iptables" && c.db == "/tmp/x.db", "flags not applied")
			},
		},
		{
			name: "flags after the command", args: []string{"status", "-o", "json", "--db=/tmp/y.db"}, wantCmd: "status",
			check: func(c config) string { return ifNot(c.output == "json" && c.db == "/tmp/y.db", "flags not applied") },
		},
		{
			name: "environment", env: map[string]string{"LBD_MASTER": "root@10.245.1.10", "LBD_MAX_DELETE": "25%", "LBD_KUBECTL_TIMEOUT": "5s"},
			check: func(c config) string {
				return ifNot(c.master == "root@10.245.1.10" && c.maxDelete == 0.25 && c.kubectlTimout == 5*time.Second, "env not applied")
			},
		},
		{
			name: "command line wins over environment", args: []string{"--master", "root@a"}, env: map[string]string{"LBD_MASTER": "root@b"},
			check: func(c config) string { return ifNot(c.master == "root@a", "env won") },
		},
		{
			name: "an empty env value means empty", env: map[string]string{"LBD_LOG_FILE": "", "LBD_KUBECTL": "", "LBD_POOL": ""},
			check: func(c config) string {
				return ifNot(c.logFile == "" && c.kubectl == "" && len(c.pools) == 0, "empty env values ignored")
			},
		},
		{name: "an empty env value is no boolean", env: map[string]string{"LBD_FULL": ""}, wantErr: `LBD_FULL=""`},
		{name: "bad env value", env: map[string]string{"LBD_FORCE": "maybe"}, wantErr: `LBD_FORCE="maybe"`},
		{name: "bad percent", args: []string{"--max-delete=150%"}, wantErr: "outside"},
		{name: "bare number above 1 is refused, not guessed", args: []string{"--max-delete=25"}, wantErr: "ambiguous"},
		{name: "bare 1 is refused, not guessed", args: []string{"--max-delete=1"}, wantErr: "write 1% or 100%"},
		{
			name: "bare fraction", args: []string{"--max-delete=0.1"},
			check: func(c config) string { return ifNot(c.maxDelete == 0.1, "0.1 not taken as 10%") },
		},
		{
			name: "1%", args: []string{"--max-delete=1%"},
			check: func(c config) string { return ifNot(c.maxDelete == 0.01, "1% not taken as 0.01") },
		},
		{name: "extra args", args: []string{"plan", "extra"}, wantCmd: "plan", wantRest: []string{"extra"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c config
			var out bytes.Buffer
			fs := newFlagSet(&c, &out)
			cmd, rest, err := parseArgs(fs, tt.args, envMap(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cmd != tt.wantCmd {
				t.Errorf("command = %q, want %q", cmd, tt.wantCmd)
			}
			if d := cmp.Diff(tt.wantRest, rest); d != "" {
				t.Errorf("rest (-want +got):\n%s", d)
			}
			if tt.check != nil {
				if msg := tt.check(c); msg != "" {
					t.Error(msg)
				}
			}
		})
	}
}

// noEnv is an environment with nothing set.
func noEnv(string) (string, bool) { return "", false }

// envMap is an environment holding exactly the variables of m.
func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func ifNot(ok bool, msg string) string {
	if ok {
		return ""
	}
	return msg
}

// TestHelpDocumentsEveryFlag: --help names every flag with its default.
func TestHelpDocumentsEveryFlag(t *testing.T) {
	var out bytes.Buffer
	code := run(t.Context(), []string{"--help"}, noEnv, &out, &out)
	if code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	var c config
	fs := newFlagSet(&c, &bytes.Buffer{})
	help := out.String()
	for _, name := range []string{"master", "backend", "db", "log-file", "max-delete", "known-hosts", "kubectl", "pod-interface", "haproxy-base"} {
		f := fs.Lookup(name)
		if f == nil {
			t.Fatalf("no flag %s", name)
		}
		if !strings.Contains(help, "-"+name) || (f.DefValue != "" && f.DefValue != "false" && !strings.Contains(help, f.DefValue)) {
			t.Errorf("--help does not document -%s with default %q", name, f.DefValue)
		}
	}
	if !strings.Contains(help, "LBD_<NAME>") {
		t.Error("--help does not mention the environment variables")
	}
}
