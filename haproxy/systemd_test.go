package haproxy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lbd/lbd/lb"
)

// TestBaseBesideHaproxyCfg: the systemd drop-in loads the operator's
// /etc/haproxy/haproxy.cfg first, then lbd's base file and services
// directory, with LBD_WITH_HAPROXY_CFG set. haproxy must accept that set
// with no alert (no second user, group or log line), and the base alone
// (the lab, or a host without haproxy.cfg) must still be complete.
func TestBaseBesideHaproxyCfg(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skipf("SKIP: haproxy is not installed: %v", err)
	}
	const debian = "/etc/haproxy/haproxy.cfg"
	if _, err := os.Stat(debian); err != nil {
		t.Skipf("SKIP: no %s to load beside the base: %v", debian, err)
	}
	dir := t.TempDir()
	base := filepath.Join(dir, "base.cfg")
	svc := filepath.Join(dir, "services.d")
	os.Mkdir(svc, 0o755)
	write(t, base, string(RenderBase(Options{})))
	files, err := Render([]lb.Service{nginx()}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		write(t, filepath.Join(svc, name), string(b))
	}
	for _, tt := range []struct {
		env  string
		args []string
	}{
		{"LBD_WITH_HAPROXY_CFG=1", []string{"-f", debian, "-f", base, "-f", svc}},
		{"", []string{"-f", base, "-f", svc}},
	} {
		cmd := exec.Command(bin, append([]string{"-c"}, tt.args...)...)
		cmd.Env = append(os.Environ(), tt.env)
		out, err := cmd.CombinedOutput()
		if err != nil || strings.Contains(string(out), "[ALERT]") || strings.Contains(string(out), "[WARNING]") {
			t.Errorf("%s haproxy -c %v: %v\n%s", tt.env, tt.args, err, out)
		}
	}
}

// TestSystemdDropIn: the drop-in keeps haproxy's own CONFIG, adds lbd's
// base file and directory (the package defaults) after it, tells the
// base that haproxy.cfg is loaded, and does not pull lbd in (a host may
// run lbd from cron).
func TestSystemdDropIn(t *testing.T) {
	b, err := os.ReadFile("../hack/systemd/haproxy.service.d/10-lbd.conf")
	if err != nil {
		t.Fatal(err)
	}
	var conf []string // the lines that are not comments
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			conf = append(conf, l)
		}
	}
	text := strings.Join(conf, "\n")
	for _, bad := range []string{`"CONFIG=`, "Wants=lbd.service", "Requires=lbd.service"} {
		if strings.Contains(text, bad) {
			t.Errorf("drop-in sets %s", bad)
		}
	}
	for _, want := range []string{
		"After=lbd.service",
		"-S " + DefaultMasterSocket + " -f " + DefaultBasePath + " -f " + DefaultDir,
		"LBD_WITH_HAPROXY_CFG=1",
		"LimitNOFILE=1048576", // 10,000 services want about 50,000 descriptors
	} {
		if !strings.Contains(text, want) {
			t.Errorf("drop-in lacks %q:\n%s", want, text)
		}
	}
}
