package cli

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// testDefaults are Defaults with the fields other packages own set the
// way cmd/lbd sets them.
func testDefaults() Config {
	c := Defaults()
	c.Kubectl, c.SSHTimeout, c.KubectlTimeout = "kubectl", 10*time.Second, 30*time.Second
	c.MaxDelete, c.MaxDeleteWindow = 0.5, time.Hour
	c.HAProxyBase, c.HAProxyDir = "/etc/haproxy/haproxy-global-default.cfg", "/etc/haproxy/services.d"
	return c
}

// parse is Parse over testDefaults with the environment env.
func parse(args []string, env map[string]string) (*Invocation, error) {
	return Parse(args, envMap(env), testDefaults())
}

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

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		env      map[string]string
		wantCmd  string
		wantArgs []string
		check    func(c Config) string // returns what is wrong, "" if fine
		wantErr  string
	}{
		{
			name: "defaults", args: nil, wantCmd: "",
			check: func(c Config) string {
				if c.DB != "/opt/LoadBalancer.sqlite.db" || c.LogFile != "/var/log/loadbalancer.log" || c.PodInterface != "flannel0" ||
					c.HAProxyBase != "/etc/haproxy/haproxy-global-default.cfg" || c.MaxDelete != 0.5 || c.Backend != "haproxy" {
					return "notes' defaults lost"
				}
				return ""
			},
		},
		{
			name: "flags before the command", args: []string{"--backend=iptables", "--db", "/tmp/x.db", "plan"}, wantCmd: "plan",
			check: func(c Config) string {
				return ifNot(c.Backend == "iptables" && c.DB == "/tmp/x.db" && c.Given["backend"] && !c.Given["master"], "flags not applied")
			},
		},
		{
			name: "flags after the command", args: []string{"status", "-o", "json", "--db=/tmp/y.db"}, wantCmd: "status",
			check: func(c Config) string { return ifNot(c.Output == "json" && c.DB == "/tmp/y.db", "flags not applied") },
		},
		{
			name: "environment", env: map[string]string{"LBD_MASTER": "root@10.245.1.10", "LBD_MAX_DELETE": "25%", "LBD_KUBECTL_TIMEOUT": "5s"},
			check: func(c Config) string {
				return ifNot(c.Master == "root@10.245.1.10" && c.MaxDelete == 0.25 && c.KubectlTimeout == 5*time.Second && c.Given["master"], "env not applied")
			},
		},
		{
			name: "command line wins over environment", args: []string{"--master", "root@a"}, env: map[string]string{"LBD_MASTER": "root@b"},
			check: func(c Config) string { return ifNot(c.Master == "root@a", "env won") },
		},
		{
			name: "an empty env value means empty", env: map[string]string{"LBD_LOG_FILE": "", "LBD_KUBECTL": "", "LBD_POOL": ""},
			check: func(c Config) string {
				return ifNot(c.LogFile == "" && c.Kubectl == "" && len(c.Pools) == 0, "empty env values ignored")
			},
		},
		{
			name: "lists, repeated and comma-separated", args: []string{"--pool=10.0.0.0/28, 10.0.1.0/28", "--pool", "10.0.2.1-10.0.2.3", "--snat-addresses=10.1.0.1-10.1.0.3"},
			check: func(c Config) string {
				return ifNot(len(c.Pools) == 3 && c.Pools[1] == "10.0.1.0/28" && len(c.SNATAddrs) == 3, fmt.Sprintf("pools %q snat %v", c.Pools, c.SNATAddrs))
			},
		},
		{name: "an empty env value is no boolean", env: map[string]string{"LBD_FULL": ""}, wantErr: `lbd: LBD_FULL="": parse error (lbd --help lists the flags)`},
		{name: "bad env value", env: map[string]string{"LBD_FORCE": "maybe"}, wantErr: `LBD_FORCE="maybe"`},
		{name: "bad percent", args: []string{"--max-delete=150%"}, wantErr: "outside"},
		{name: "bare number above 1 is refused, not guessed", args: []string{"--max-delete=25"}, wantErr: "ambiguous"},
		{name: "bare 1 is refused, not guessed", args: []string{"--max-delete=1"}, wantErr: "write 1% or 100%"},
		{name: "bad range", args: []string{"--snat-addresses=10.0.0.9-10.0.0.1"}, wantErr: "want first <= last"},
		{
			name: "bare fraction", args: []string{"--max-delete=0.1"},
			check: func(c Config) string { return ifNot(c.MaxDelete == 0.1, "0.1 not taken as 10%") },
		},
		{
			name: "1%", args: []string{"--max-delete=1%"},
			check: func(c Config) string { return ifNot(c.MaxDelete == 0.01, "1% not taken as 0.01") },
		},
		{name: "extra args", args: []string{"plan", "extra"}, wantErr: `lbd plan: unexpected arguments ["extra"]`},
		{name: "unknown command", args: []string{"bogus"}, wantErr: `lbd: unknown command "bogus" (try lbd --help)`},
		{name: "unknown flag", args: []string{"--nope"}, wantErr: "lbd: flag provided but not defined: -nope (lbd --help lists the flags)"},
		{name: "explain takes its target", args: []string{"explain", "10.0.0.1:80"}, wantCmd: "explain", wantArgs: []string{"10.0.0.1:80"}},
		{name: "explain wants one target", args: []string{"explain", "a", "b"}, wantErr: "lbd explain: want one ADDRESS:PORT[/PROTO]"},
		{name: "completion takes a shell", args: []string{"completion", "zsh"}, wantCmd: "completion", wantArgs: []string{"zsh"}},
		{name: "completion wants one shell", args: []string{"completion"}, wantErr: "lbd completion: want one shell: bash or zsh"},
		{name: "completion knows no fish", args: []string{"completion", "fish"}, wantErr: `lbd completion: unknown shell "fish": want bash or zsh`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv, err := parse(tt.args, tt.env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || inv != nil {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if inv.Command != tt.wantCmd {
				t.Errorf("command = %q, want %q", inv.Command, tt.wantCmd)
			}
			if d := cmp.Diff(tt.wantArgs, inv.Args); d != "" {
				t.Errorf("args (-want +got):\n%s", d)
			}
			if tt.check != nil {
				if msg := tt.check(inv.Config); msg != "" {
					t.Error(msg)
				}
			}
		})
	}
}

// TestParseHelp: --help, -h and lbd help [CMD] are flag.ErrHelp with the
// command whose help is wanted.
func TestParseHelp(t *testing.T) {
	for _, tt := range []struct {
		args []string
		cmd  string
	}{
		{[]string{"--help"}, ""}, {[]string{"-h"}, ""}, {[]string{"help"}, ""}, {[]string{"--help", "plan"}, ""},
		{[]string{"help", "plan"}, "plan"}, {[]string{"plan", "--help"}, "plan"}, {[]string{"help", "--help"}, "help"},
		{[]string{"help", "bogus"}, "bogus"},
	} {
		inv, err := parse(tt.args, nil)
		if !errors.Is(err, flag.ErrHelp) || inv == nil || inv.Command != tt.cmd {
			t.Errorf("Parse(%q) = %+v, %v; want ErrHelp for %q", tt.args, inv, err, tt.cmd)
		}
	}
}

func TestAllowDeleteArgs(t *testing.T) {
	tests := []struct {
		args    []string
		want    []string // the names let through
		wantErr string   // "" = accepted
	}{
		{[]string{"apply", "default/a"}, []string{"default/a"}, ""},
		{[]string{"apply", "--allow-delete", "default/a", "web/b"}, []string{"default/a", "web/b"}, ""},
		{[]string{"plan", "--allow-delete", "default/a"}, []string{"default/a"}, ""},
		{[]string{"apply", "nonamespace"}, nil, `lbd apply: --allow-delete "nonamespace": want namespace/name`},
		{[]string{"apply", "a/b/c"}, nil, `--allow-delete "a/b/c": want namespace/name`},
		{[]string{"--allow-delete", "default/a"}, nil, "lbd : --allow-delete needs lbd apply"},
		{[]string{"run", "--allow-delete", "default/a"}, nil, "lbd run: --allow-delete needs lbd apply"},
		{[]string{"status", "default/a"}, nil, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			inv, err := parse(tt.args, nil)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if d := cmp.Diff(tt.want, inv.Config.AllowDelete); d != "" {
					t.Errorf("allow-delete (-want +got):\n%s", d)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err %v; want %q", err, tt.wantErr)
			}
		})
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
			inv, err := parse(tt.args, tt.env)
			if err != nil || inv.Command != "run" {
				t.Fatalf("Parse = %+v, %v", inv, err)
			}
			c := inv.Config
			got := [5]string{fmt.Sprint(c.Watch), c.Interval.String(), c.Resync.String(), c.Debounce.String(), c.MetricsAddr}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	t.Run("bad values are refused before anything runs", func(t *testing.T) {
		for args, want := range map[[2]string]string{
			{"run", "--interval=0"}:    "lbd: --interval 0s: must be positive",
			{"run", "--resync=-1s"}:    "lbd: --resync -1s: must be positive",
			{"run", "--debounce=-1ms"}: "lbd: --debounce -1ms: must not be negative",
		} {
			if _, err := parse(args[:], nil); err == nil || err.Error() != want {
				t.Errorf("lbd %v: %v, want %q", args, err, want)
			}
		}
		if _, err := parse([]string{"sync", "--interval=0"}, nil); err != nil {
			t.Errorf("a pass refuses --interval=0, which only lbd run uses: %v", err)
		}
	})
}

// TestDefaultFile: every LBD_ setting in the example /etc/default/lbd,
// commented or not, is a flag lbd accepts with the value shown.
func TestDefaultFile(t *testing.T) {
	b, err := os.ReadFile("../hack/default/lbd")
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
	c := testDefaults()
	known := map[string]bool{}
	newFlagSet(&c).VisitAll(func(f *flag.Flag) { known[EnvName(f.Name)] = true })
	for k := range env {
		if !known[k] {
			t.Errorf("hack/default/lbd sets %s, which is no flag", k)
		}
	}
	inv, err := parse([]string{"run"}, env)
	if err != nil {
		t.Fatalf("hack/default/lbd does not parse: %v", err)
	}
	if c := inv.Config; c.Master != "root@kubernetes-master" || c.Kubectl != "sudo kubectl --kubeconfig /etc/kubernetes/admin.conf" || c.MetricsAddr != "127.0.0.1:9720" {
		t.Errorf("values not as written: master %q kubectl %q metrics %q", c.Master, c.Kubectl, c.MetricsAddr)
	}
}

func TestExitCodes(t *testing.T) {
	for _, tt := range []struct{ changes, held, plan, pass int }{
		{0, 0, ExitOK, ExitOK}, {2, 0, ExitPending, ExitOK}, {0, 1, ExitHeld, ExitHeld}, {3, 1, ExitPending, ExitHeld},
	} {
		if got := PlanExit(tt.changes, tt.held); got != tt.plan {
			t.Errorf("PlanExit(%d, %d) = %d, want %d", tt.changes, tt.held, got, tt.plan)
		}
		if got := PassExit(tt.held); got != tt.pass {
			t.Errorf("PassExit(%d) = %d, want %d", tt.held, got, tt.pass)
		}
	}
	if Version("1.2.3") != "1.2.3" || Version("") == "" {
		t.Errorf("Version: %q %q", Version("1.2.3"), Version(""))
	}
}
