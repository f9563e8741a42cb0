package debtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// scriptsDir holds the maintainer scripts nfpm.yaml packages.
const scriptsDir = "../pkg/scripts"

func TestMaintainerScriptsParse(t *testing.T) {
	for _, name := range []string{"postinst", "prerm", "postrm"} {
		path := filepath.Join(scriptsDir, name)
		if out, err := exec.Command("sh", "-n", path).CombinedOutput(); err != nil {
			t.Errorf("sh -n %s: %v\n%s", path, err, out)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(b), "#!/bin/sh\n") || !strings.Contains(string(b), "\nset -e\n") {
			t.Errorf("%s: want a #!/bin/sh script with set -e", name)
		}
	}
}

// fakeSystemctl logs its arguments, one call a line, to $SYSTEMCTL_LOG;
// is-active succeeds when $LBD_ACTIVE is 1.
const fakeSystemctl = `#!/bin/sh
echo "$*" >>"$SYSTEMCTL_LOG"
if [ "$1" = is-active ]; then
	[ "$LBD_ACTIVE" = 1 ] && exit 0
	exit 3
fi
exit 0
`

// TestMaintainerScripts runs each script with a stand-in systemctl and the
// systemd paths moved into a temporary directory, and checks which
// systemctl calls it makes: never one that starts, restarts or enables
// anything, a stop only when an active lbd is removed (not upgraded).
func TestMaintainerScripts(t *testing.T) {
	tests := []struct {
		name    string
		script  string
		args    []string
		systemd bool // /run/systemd/system exists
		active  bool // systemctl is-active lbd.service succeeds
		want    []string
		wantErr bool
	}{
		{name: "install", script: "postinst", args: []string{"configure", ""}, systemd: true,
			want: []string{"daemon-reload"}},
		{name: "install with lbd active", script: "postinst", args: []string{"configure", ""}, systemd: true, active: true,
			want: []string{"daemon-reload"}},
		{name: "upgrade of a running lbd", script: "postinst", args: []string{"configure", "0.0.1"}, systemd: true, active: true,
			want: []string{"daemon-reload", "is-active --quiet lbd.service"}},
		{name: "install without systemd", script: "postinst", args: []string{"configure", ""}},
		{name: "postinst abort-upgrade", script: "postinst", args: []string{"abort-upgrade", "0.0.2"}, systemd: true, active: true},
		{name: "postinst unknown", script: "postinst", args: []string{"bogus"}, systemd: true, wantErr: true},
		{name: "remove of a running lbd", script: "prerm", args: []string{"remove"}, systemd: true, active: true,
			want: []string{"is-active --quiet lbd.service", "stop lbd.service"}},
		{name: "remove of a stopped lbd", script: "prerm", args: []string{"remove"}, systemd: true,
			want: []string{"is-active --quiet lbd.service"}},
		{name: "remove without systemd", script: "prerm", args: []string{"remove"}, active: true},
		{name: "upgrade keeps lbd running", script: "prerm", args: []string{"upgrade", "0.0.2"}, systemd: true, active: true},
		{name: "prerm unknown", script: "prerm", args: []string{"bogus"}, systemd: true, wantErr: true},
		{name: "postrm remove", script: "postrm", args: []string{"remove"}, systemd: true, active: true,
			want: []string{"daemon-reload"}},
		{name: "postrm purge", script: "postrm", args: []string{"purge"}, systemd: true,
			want: []string{"daemon-reload"}},
		{name: "postrm purge without systemd", script: "postrm", args: []string{"purge"}},
		{name: "postrm upgrade", script: "postrm", args: []string{"upgrade", "0.0.2"}, systemd: true,
			want: []string{"daemon-reload"}},
		{name: "postrm unknown", script: "postrm", args: []string{"bogus"}, systemd: true, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls, err := runScript(t, tt.script, tt.args, tt.systemd, tt.active, nil)
			if (err != nil) != tt.wantErr {
				t.Fatalf("%s %q: err %v, want error %v", tt.script, tt.args, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, calls); diff != "" {
				t.Errorf("%s %q: systemctl calls (-want +got):\n%s", tt.script, tt.args, diff)
			}
		})
	}
}

// TestPostrmPurgeLinks checks that purge removes only the enable links
// that point at lbd.service and no longer resolve.
func TestPostrmPurgeLinks(t *testing.T) {
	links := map[string]string{
		"multi-user.target.wants/lbd.service": "/lib/systemd/system/lbd.service", // dangling: removed
		"other.target.wants/lbd.service":      "/nowhere/else.service",           // not lbd's: kept
		"multi-user.target.wants/ssh.service": "/lib/systemd/system/ssh.service", // not lbd's: kept
	}
	var etc string
	_, err := runScript(t, "postrm", []string{"purge"}, false, false, func(dir string) {
		etc = dir
		for name, target := range links {
			p := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
		}
		// A resolving link to lbd.service is the operator's, not a leftover.
		own := filepath.Join(dir, "lbd.service")
		if err := os.WriteFile(own, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, "timers.target.wants"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(own, filepath.Join(dir, "timers.target.wants/lbd.service")); err != nil {
			t.Fatal(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	matches, _ := filepath.Glob(filepath.Join(etc, "*", "*"))
	for _, m := range matches {
		rel, _ := filepath.Rel(etc, m)
		left = append(left, rel)
	}
	want := []string{"multi-user.target.wants/ssh.service", "other.target.wants/lbd.service", "timers.target.wants/lbd.service"}
	if diff := cmp.Diff(want, left); diff != "" {
		t.Errorf("links after purge (-want +got):\n%s", diff)
	}
}

// runScript runs a copy of the named maintainer script in which
// /run/systemd/system and /etc/systemd/system are directories of the test,
// with the stand-in systemctl first in PATH, and returns the systemctl
// calls it made. prepare, if set, fills the stand-in /etc/systemd/system.
func runScript(t *testing.T, name string, args []string, systemd, active bool, prepare func(etcSystemd string)) ([]string, error) {
	t.Helper()
	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join(scriptsDir, name))
	if err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run-systemd")
	if systemd {
		if err := os.Mkdir(run, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	etc := filepath.Join(dir, "etc-systemd")
	if err := os.Mkdir(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(etc)
	}
	script := strings.NewReplacer("/run/systemd/system", run, "/etc/systemd/system", etc).Replace(string(src))
	if !strings.Contains(string(src), "/run/systemd/system") {
		t.Fatalf("%s does not ask whether systemd runs (/run/systemd/system)", name)
	}
	path := filepath.Join(dir, name)
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for file, text := range map[string]string{path: script, filepath.Join(bin, "systemctl"): fakeSystemctl} {
		if err := os.WriteFile(file, []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	log := filepath.Join(dir, "systemctl.log")
	cmd := exec.Command("sh", append([]string{path}, args...)...)
	activeEnv := "0"
	if active {
		activeEnv = "1"
	}
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "SYSTEMCTL_LOG="+log, "LBD_ACTIVE="+activeEnv)
	out, runErr := cmd.CombinedOutput()
	t.Logf("%s %q:\n%s", name, args, out)
	b, err := os.ReadFile(log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var calls []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		calls = append(calls, line)
		for _, verb := range []string{"start", "restart", "reload-or-restart", "try-restart", "enable", "unmask", "isolate"} {
			if strings.HasPrefix(line, verb+" ") {
				t.Errorf("%s %q ran systemctl %s: maintainer scripts must not start or enable anything", name, args, line)
			}
		}
	}
	return calls, runErr
}
