package debtest

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/internal/testkit"
)

// The version make deb stamps for the test, and the Debian version
// hack/pkg/deb.sh derives from it.
const (
	testVersion    = "v0.0.1-debtest.1"
	testDebVersion = "0.0.1+debtest.1"
)

// packaged lists the package's regular files and their modes as
// dpkg-deb -c shows them; nothing else may be in it.
var packaged = map[string]string{
	"/usr/sbin/lbd":                                "-rwxr-xr-x",
	"/lib/systemd/system/lbd.service":              "-rw-r--r--",
	"/etc/default/lbd":                             "-rw-------",
	"/etc/logrotate.d/lbd":                         "-rw-r--r--",
	"/usr/share/doc/lbd/README.md":                 "-rw-r--r--",
	"/usr/share/doc/lbd/CHANGELOG.md":              "-rw-r--r--",
	"/usr/share/doc/lbd/copyright":                 "-rw-r--r--",
	"/usr/share/lbd/cron.d-lbd":                    "-rw-r--r--",
	"/usr/share/lbd/remote/lbd-remote":             "-rwxr-xr-x",
	"/usr/share/lbd/remote/rbac.yaml":              "-rw-r--r--",
	"/usr/share/lbd/remote/kubeconfig.sh":          "-rwxr-xr-x",
	"/usr/share/lbd/haproxy.service.d/10-lbd.conf": "-rw-r--r--",
}

// conffiles are the files dpkg keeps on remove and asks about on upgrade.
var conffiles = []string{"/etc/default/lbd", "/etc/logrotate.d/lbd"}

// TestDebInstall builds the package with make deb, checks its control
// data and files, installs it on this machine with dpkg -i, checks that
// nothing was started or enabled and that the installed lbd reports the
// stamped version, reinstalls it over an edited conffile, then removes and
// purges it and checks what is left. The machine is left as it was found,
// even when the test fails.
func TestDebInstall(t *testing.T) {
	testkit.RequireRoot(t)
	for _, tool := range []string{"dpkg", "dpkg-deb", "dpkg-query", "make"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("SKIPPED: %s not found; this test needs a Debian machine", tool)
		}
	}
	if status := pkgStatus(t); status != "" {
		t.Skipf("SKIPPED: package lbd is already on this machine (%s); the test would remove it", status)
	}
	if _, err := os.Lstat("/usr/sbin/lbd"); err == nil {
		t.Skip("SKIPPED: /usr/sbin/lbd exists and belongs to no package; the test would overwrite it")
	}
	dropIn := "/etc/systemd/system/haproxy.service.d/10-lbd.conf"
	_, dropInErr := os.Lstat(dropIn)
	dropInBefore := dropInErr == nil

	out := t.TempDir()
	run(t, "make", "-C", "../..", "deb", "BIN="+out, "VERSION="+testVersion)
	deb := filepath.Join(out, "lbd_"+testDebVersion+"_"+debArch(t)+".deb")
	if fi, err := os.Stat(deb); err != nil {
		t.Fatalf("make deb made no %s: %v", deb, err)
	} else {
		t.Logf("%s: %d bytes", deb, fi.Size())
	}

	t.Run("control", func(t *testing.T) {
		control := run(t, "dpkg-deb", "-f", deb)
		for _, want := range []string{
			"Package: lbd\n",
			"Version: " + testDebVersion + "\n",
			"Architecture: " + debArch(t) + "\n",
			"Recommends: haproxy, iptables\n",
			"Suggests: nftables, keepalived, conntrackd\n",
		} {
			if !strings.Contains(control, want) {
				t.Errorf("control lacks %q:\n%s", want, control)
			}
		}
		if strings.Contains(control, "\nDepends:") || strings.Contains(control, "\nPre-Depends:") {
			t.Errorf("control has dependencies; a static binary needs none:\n%s", control)
		}
		got := strings.Fields(run(t, "dpkg-deb", "-I", deb, "conffiles"))
		if diff := cmp.Diff(conffiles, got); diff != "" {
			t.Errorf("conffiles (-want +got):\n%s", diff)
		}
		for _, s := range []string{"postinst", "prerm", "postrm"} {
			if body := run(t, "dpkg-deb", "-I", deb, s); !strings.HasPrefix(body, "#!/bin/sh\n") {
				t.Errorf("%s is not the sh script of hack/pkg/scripts:\n%s", s, body)
			}
		}
	})

	t.Run("files", func(t *testing.T) {
		files := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(run(t, "dpkg-deb", "-c", deb)), "\n") {
			// drwxr-xr-x root/root 0 2026-12-07 12:22 ./etc/
			f := strings.Fields(line)
			if len(f) != 6 {
				t.Errorf("dpkg-deb -c line %q: want 6 fields", line)
				continue
			}
			if f[1] != "root/root" {
				t.Errorf("%s is owned by %s, want root/root", f[5], f[1])
			}
			if f[0][0] == 'd' {
				continue
			}
			files[strings.TrimPrefix(f[5], ".")] = f[0]
		}
		if diff := cmp.Diff(packaged, files); diff != "" {
			t.Errorf("files and modes (-want +got):\n%s", diff)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	// From here on the machine changes: undo it whatever happens.
	t.Cleanup(func() {
		if status := pkgStatus(t); status != "" {
			if out, err := dpkg("-P", "lbd"); err != nil {
				t.Errorf("cleanup: dpkg -P lbd: %v\n%s", err, out)
			}
		}
	})
	if out, err := dpkg("-i", deb); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, out)
	} else {
		t.Logf("dpkg -i:\n%s", out)
	}

	t.Run("installed", func(t *testing.T) {
		if got, want := pkgStatus(t), "install ok installed "+testDebVersion; got != want {
			t.Errorf("dpkg-query: %q, want %q", got, want)
		}
		for path, mode := range packaged {
			fi, err := os.Stat(path)
			if err != nil {
				t.Errorf("installed: %v", err)
				continue
			}
			if got := fi.Mode().String(); got != mode {
				t.Errorf("%s: mode %s, want %s", path, got, mode)
			}
		}
		if got, want := run(t, "/usr/sbin/lbd", "version"), "lbd "+testVersion+"\n"; got != want {
			t.Errorf("lbd version: %q, want %q", got, want)
		}
		if f, err := elf.Open("/usr/sbin/lbd"); err != nil {
			t.Errorf("lbd is not ELF: %v", err)
		} else {
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					t.Errorf("/usr/sbin/lbd has a program interpreter: it is not static (CGO_ENABLED=0)")
				}
			}
			f.Close()
		}
		contains := map[string][]string{
			"/lib/systemd/system/lbd.service": {"ExecStart=/usr/sbin/lbd run\n", "Documentation=file:/usr/share/doc/lbd/README.md\n"},
			"/usr/share/lbd/cron.d-lbd":       {"exec /usr/sbin/lbd sync"},
			"/usr/share/doc/lbd/copyright":    {"License: Apache-2.0\n", " Apache License\n", " Version 2.0, January 2004\n"},
		}
		for path, wants := range contains {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Error(err)
				continue
			}
			for _, want := range wants {
				if !strings.Contains(string(b), want) {
					t.Errorf("%s lacks %q", path, want)
				}
			}
			if strings.Contains(string(b), "/usr/local/sbin/lbd") {
				t.Errorf("%s still names /usr/local/sbin/lbd", path)
			}
		}
	})

	t.Run("nothing started or enabled", func(t *testing.T) {
		if pids := lbdProcesses(t); len(pids) > 0 {
			t.Errorf("lbd runs after dpkg -i (pids %v): the package must start nothing", pids)
		}
		if _, err := os.Stat("/run/systemd/system"); err == nil {
			if out, _ := exec.Command("systemctl", "is-active", "lbd.service").Output(); strings.TrimSpace(string(out)) == "active" {
				t.Error("lbd.service is active after dpkg -i")
			}
		}
		if links, _ := filepath.Glob("/etc/systemd/system/*.wants/lbd.service"); len(links) > 0 {
			t.Errorf("lbd.service is enabled after dpkg -i: %v", links)
		}
		if _, err := os.Lstat(dropIn); err == nil && !dropInBefore {
			t.Errorf("dpkg -i made %s active; it is an example under /usr/share/lbd", dropIn)
		}
	})

	// An operator's edit of a conffile survives a reinstall untouched.
	const edit = "LBD_MASTER=root@master-of-the-test\n"
	if err := appendFile("/etc/default/lbd", edit); err != nil {
		t.Fatal(err)
	}
	if out, err := dpkg("-i", deb); err != nil {
		t.Fatalf("dpkg -i again: %v\n%s", err, out)
	}
	if b, err := os.ReadFile("/etc/default/lbd"); err != nil || !strings.HasSuffix(string(b), edit) {
		t.Errorf("reinstall replaced the edited /etc/default/lbd (err %v)", err)
	}

	if out, err := dpkg("-r", "lbd"); err != nil {
		t.Fatalf("dpkg -r: %v\n%s", err, out)
	}
	if got, want := pkgStatus(t), "deinstall ok config-files "+testDebVersion; got != want {
		t.Errorf("after dpkg -r: dpkg-query %q, want %q", got, want)
	}
	if diff := cmp.Diff(conffiles, present()); diff != "" {
		t.Errorf("after dpkg -r, files left (-want +got): only conffiles stay\n%s", diff)
	}

	if out, err := dpkg("-P", "lbd"); err != nil {
		t.Fatalf("dpkg -P: %v\n%s", err, out)
	}
	if got := pkgStatus(t); got != "" {
		t.Errorf("after dpkg -P: dpkg-query %q, want no package", got)
	}
	if left := present(); len(left) > 0 {
		t.Errorf("after dpkg -P, files left: %v", left)
	}
	for _, dir := range []string{"/usr/share/doc/lbd", "/usr/share/lbd"} {
		if _, err := os.Lstat(dir); err == nil {
			t.Errorf("after dpkg -P, %s is left", dir)
		}
	}
}

// run runs a command and returns its stdout, failing t with its stderr.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// dpkg runs dpkg with args, retrying for up to two minutes while another
// dpkg or apt holds the lock.
func dpkg(args ...string) (string, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		cmd := exec.Command("dpkg", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err == nil || !bytes.Contains(out, []byte("lock")) || time.Now().After(deadline) {
			return string(out), err
		}
		time.Sleep(2 * time.Second)
	}
}

// pkgStatus is dpkg's status and version of lbd, "" when dpkg knows no
// such package.
func pkgStatus(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("dpkg-query", "-W", "-f", "${Status} ${Version}", "lbd").Output()
	if err != nil {
		return ""
	}
	s := strings.TrimSpace(string(out))
	if strings.HasPrefix(s, "unknown ok not-installed") {
		return ""
	}
	return s
}

// debArch is Debian's name of this machine's architecture.
func debArch(t *testing.T) string {
	t.Helper()
	return strings.TrimSpace(run(t, "dpkg", "--print-architecture"))
}

// present lists the packaged paths that exist now, sorted.
func present() []string {
	var got []string
	for path := range packaged {
		if _, err := os.Lstat(path); err == nil {
			got = append(got, path)
		}
	}
	sort.Strings(got)
	return got
}

// lbdProcesses lists the pids whose executable is /usr/sbin/lbd.
func lbdProcesses(t *testing.T) []string {
	t.Helper()
	exes, err := filepath.Glob("/proc/[0-9]*/exe")
	if err != nil {
		t.Fatal(err)
	}
	var pids []string
	for _, exe := range exes {
		if target, err := os.Readlink(exe); err == nil && strings.HasPrefix(target, "/usr/sbin/lbd") {
			pids = append(pids, filepath.Base(filepath.Dir(exe)))
		}
	}
	return pids
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
