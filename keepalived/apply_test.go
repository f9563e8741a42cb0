package keepalived

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

// fakeKeepalived is a Keepalived in a temp dir whose check and reload are
// counted (and the check can be made to fail).
type fakeKeepalived struct {
	*Keepalived
	checks, reloads int
	checkErr        error
}

func newFake(t *testing.T) *fakeKeepalived {
	dir := t.TempDir()
	o := base()
	o.ConfigPath = filepath.Join(dir, "keepalived", "lbd.conf")
	o.NotifyScript = filepath.Join(dir, "keepalived", "lbd-notify.sh")
	o.TrackFile = filepath.Join(dir, "run", "health")
	o.StateFile = filepath.Join(dir, "run", "state")
	o.PIDFile = filepath.Join(dir, "run", "keepalived.pid")
	f := &fakeKeepalived{Keepalived: New(o, testLog(t))}
	f.check = func(_ context.Context, path string) error {
		f.checks++
		if !strings.HasPrefix(filepath.Base(path), ".lbd.conf.") {
			t.Errorf("check got %s, want the staged file beside the config", path)
		}
		return f.checkErr
	}
	f.reload = func(context.Context) error { f.reloads++; return nil }
	return f
}

func TestApplyWritesValidatesReloadsOnlyOnChange(t *testing.T) {
	f := newFake(t)
	ctx := context.Background()
	steps := []struct {
		name          string
		addrs         []string
		checkErr      error
		wantChanged   bool
		wantErr       bool
		checks, loads int
		wantIn        string // the file in place must hold this
	}{
		{"first write", []string{"192.168.121.201"}, nil, true, false, 1, 1, "192.168.121.201/32"},
		{"same addresses, other order", []string{"192.168.121.201", "192.168.121.201"}, nil, false, false, 1, 1, "192.168.121.201/32"},
		{"new address", []string{"192.168.121.202", "192.168.121.201"}, nil, true, false, 2, 2, "192.168.121.202/32"},
		{"refused by the config test keeps the old file", []string{"192.168.121.203"}, errors.New("refused"), false, true, 3, 2, "192.168.121.202/32"},
		{"no address of the family keeps the old file", nil, nil, false, true, 3, 2, "192.168.121.202/32"},
	}
	for _, s := range steps {
		f.checkErr = s.checkErr
		changed, err := f.Apply(ctx, addrs(s.addrs...))
		if changed != s.wantChanged || (err != nil) != s.wantErr {
			t.Fatalf("%s: Apply = %v, %v; want changed %v, error %v", s.name, changed, err, s.wantChanged, s.wantErr)
		}
		if f.checks != s.checks || f.reloads != s.loads {
			t.Errorf("%s: %d checks, %d reloads; want %d, %d", s.name, f.checks, f.reloads, s.checks, s.loads)
		}
		b, err := os.ReadFile(f.o.ConfigPath)
		if err != nil || !strings.Contains(string(b), s.wantIn) {
			t.Errorf("%s: file in place lacks %s (err %v)", s.name, s.wantIn, err)
		}
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(f.o.ConfigPath), ".*"))
	if len(left) > 0 {
		t.Errorf("staged files left behind: %v", left)
	}
	st, err := os.Stat(f.o.NotifyScript)
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("notify script: %v, %v; want mode 0755", st, err)
	}
}

func TestApplyRealConfigTestFailureKeepsOldFile(t *testing.T) {
	if _, err := exec.LookPath("keepalived"); err != nil {
		t.Skip("keepalived not installed")
	}
	f := newFake(t)
	f.check = f.configTest // real keepalived; eth1 does not exist here, so it refuses
	f.o.Interface = "lbdnosuch0"
	os.MkdirAll(filepath.Dir(f.o.ConfigPath), 0o755)
	os.WriteFile(f.o.ConfigPath, []byte("# old\n"), 0o644)
	changed, err := f.Apply(context.Background(), addrs("192.168.121.201"))
	var ce *ConfigError
	if changed || !errors.As(err, &ce) {
		t.Fatalf("Apply = %v, %v; want a ConfigError", changed, err)
	}
	if !strings.Contains(ce.Output, "lbdnosuch0") {
		t.Errorf("keepalived's words should name the interface: %q", ce.Output)
	}
	if b, _ := os.ReadFile(f.o.ConfigPath); string(b) != "# old\n" {
		t.Errorf("old file replaced: %q", b)
	}
	if f.reloads != 0 {
		t.Errorf("%d reloads after a refused config", f.reloads)
	}
}

func TestSighup(t *testing.T) {
	f := newFake(t)
	k := f.Keepalived
	if err := k.sighup(context.Background()); !errors.Is(err, ErrNotRunning) {
		t.Errorf("no pid file: %v, want ErrNotRunning", err)
	}
	// A child that records SIGHUP: this test binary in helper mode. Go's
	// signal.Notify catches SIGHUP even when the test runs under nohup,
	// where a shell's trap could not (an ignored signal stays ignored).
	cmd := exec.Command(os.Args[0], "-test.run=^TestSighupHelper$")
	cmd.Env = append(os.Environ(), "LBD_SIGHUP_HELPER=1")
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 4)
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := out.Read(buf)
			if n > 0 {
				lines <- string(buf[:n])
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	read := func() string {
		select {
		case l := <-lines:
			return l
		case <-time.After(10 * time.Second):
			return "(nothing within 10s)"
		}
	}
	if got := read(); !strings.Contains(got, "ready") {
		t.Fatalf("child said %q", got)
	}
	os.MkdirAll(filepath.Dir(k.o.PIDFile), 0o755)
	os.WriteFile(k.o.PIDFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	if err := k.sighup(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(read()); !strings.Contains(got, "hup") {
		t.Errorf("child got %q, want hup", got)
	}
	cmd.Wait()
	if err := k.sighup(context.Background()); !errors.Is(err, ErrNotRunning) {
		t.Errorf("dead pid: %v, want ErrNotRunning", err)
	}
}

// TestSighupHelper is TestSighup's child: it prints "ready", then "hup"
// when SIGHUP arrives, and exits. It does nothing in a normal run.
func TestSighupHelper(t *testing.T) {
	if os.Getenv("LBD_SIGHUP_HELPER") != "1" {
		t.Skip("helper process of TestSighup")
	}
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGHUP)
	os.Stdout.WriteString("ready\n")
	select {
	case <-c:
		os.Stdout.WriteString("hup\n")
	case <-time.After(30 * time.Second):
	}
	os.Exit(0)
}

func TestWriteHealthAndState(t *testing.T) {
	f := newFake(t)
	k := f.Keepalived
	if _, err := k.State(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("State before any transition = %v, want ErrNotExist", err)
	}
	for _, ok := range []bool{false, true, true} {
		if err := k.WriteHealth(ok); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(k.o.TrackFile)
		want := map[bool]string{true: "0\n", false: "1\n"}[ok]
		if string(b) != want {
			t.Errorf("WriteHealth(%v) wrote %q, want %q", ok, b, want)
		}
	}
	// an unchanged value is not rewritten (keepalived sees no event)
	st1, _ := os.Stat(k.o.TrackFile)
	time.Sleep(10 * time.Millisecond)
	k.WriteHealth(true)
	st2, _ := os.Stat(k.o.TrackFile)
	if !st1.ModTime().Equal(st2.ModTime()) {
		t.Error("an unchanged health value was rewritten")
	}

	// the real hook, as keepalived runs it
	script := filepath.Join(t.TempDir(), "notify.sh")
	os.WriteFile(script, NotifyScript(), 0o755)
	var got []string
	for _, s := range []string{StateBackup, StateMaster, StateFault, StateStop} {
		if out, err := exec.Command(script, s, k.o.StateFile).CombinedOutput(); err != nil {
			t.Fatalf("hook %s: %v: %s", s, err, out)
		}
		st, err := k.State()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, st)
	}
	if d := cmp.Diff([]string{StateBackup, StateMaster, StateFault, StateStop}, got); d != "" {
		t.Errorf("states (-want +got):\n%s", d)
	}
	if out, err := exec.Command(script, "bogus", k.o.StateFile).CombinedOutput(); err == nil {
		t.Errorf("hook accepted a bogus state: %s", out)
	}
	if st, _ := k.State(); st != StateStop {
		t.Errorf("a bogus state changed the file to %q", st)
	}
}

// TestRunning: Running tells a live keepalived from a missing pid file and
// from a pid file whose process is gone (a SIGKILL leaves one).
func TestRunning(t *testing.T) {
	k := newFake(t).Keepalived
	if err := k.Running(); !errors.Is(err, ErrNotRunning) {
		t.Errorf("no pid file: %v, want ErrNotRunning", err)
	}
	os.MkdirAll(filepath.Dir(k.o.PIDFile), 0o755)
	os.WriteFile(k.o.PIDFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	if err := k.Running(); err != nil {
		t.Errorf("live pid: %v", err)
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(k.o.PIDFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	if err := k.Running(); !errors.Is(err, ErrNotRunning) {
		t.Errorf("dead pid: %v, want ErrNotRunning", err)
	}
}
