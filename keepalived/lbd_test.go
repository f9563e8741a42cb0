package keepalived

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestOwner: the owner renders the wanted addresses and owns none; no
// address yet and keepalived not running are no errors, a refused config
// is.
func TestOwner(t *testing.T) {
	f := newFake(t)
	o := f.Owner(nil)
	if o.Interface() != "keepalived:eth1" {
		t.Errorf("Interface = %q", o.Interface())
	}
	owned, err := o.Sync(t.Context(), addrs("192.168.121.201", "192.168.121.202"), nil)
	if err != nil || owned != nil || f.reloads != 1 {
		t.Fatalf("Sync = %v, %v after %d reloads; want nothing owned, one reload", owned, err, f.reloads)
	}
	if b, _ := os.ReadFile(f.Options().ConfigPath); !strings.Contains(string(b), "192.168.121.202") {
		t.Errorf("the include file lacks the address:\n%s", b)
	}
	if _, err := o.Sync(t.Context(), nil, nil); err != nil {
		t.Errorf("no address to announce: %v", err)
	}
	f.reload = func(context.Context) error { return ErrNotRunning }
	if _, err := o.Sync(t.Context(), addrs("192.168.121.203"), nil); err != nil {
		t.Errorf("keepalived not running: %v", err)
	}
	f.checkErr = errors.New("bad config")
	if _, err := o.Sync(t.Context(), addrs("192.168.121.204"), nil); err == nil {
		t.Error("a refused config is no error")
	}
}

// TestFollowerAndDescribe: only a reported MASTER leads; the state line
// says why it is unknown.
func TestFollowerAndDescribe(t *testing.T) {
	f := newFake(t)
	// A live keepalived: this process.
	os.MkdirAll(filepath.Dir(f.Options().PIDFile), 0o755)
	if err := os.WriteFile(f.Options().PIDFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if !f.Follower() || f.Describe() != "unknown (keepalived has not reported a state yet)" {
		t.Errorf("without a state: follower %v, %q", f.Follower(), f.Describe())
	}
	write := func(s string) {
		os.MkdirAll(filepath.Dir(f.Options().StateFile), 0o755)
		if err := os.WriteFile(f.Options().StateFile, []byte(s+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		state, describe string
		follower        bool
	}{
		{StateMaster, "MASTER", false},
		{StateBackup, "BACKUP", true},
		{"DANCING", `unknown: HA state ` + f.Options().StateFile + `: unknown state "DANCING"`, true},
	} {
		write(tt.state)
		if f.Follower() != tt.follower || f.Describe() != tt.describe {
			t.Errorf("%s: follower %v, %q; want %v, %q", tt.state, f.Follower(), f.Describe(), tt.follower, tt.describe)
		}
	}
}

// TestReportPass: a good pass writes 0, a failed one 1.
func TestReportPass(t *testing.T) {
	f := newFake(t)
	for _, tt := range []struct {
		err  error
		want string
	}{{nil, "0\n"}, {errors.New("discover: down"), "1\n"}, {nil, "0\n"}} {
		f.ReportPass(tt.err)
		if b, _ := os.ReadFile(f.Options().TrackFile); string(b) != tt.want {
			t.Errorf("after %v the track file holds %q, want %q", tt.err, b, tt.want)
		}
	}
}

// TestPID: the pid file must name a live process.
func TestPID(t *testing.T) {
	f := newFake(t)
	path := f.Options().PIDFile
	if _, err := f.PID(); err == nil {
		t.Error("no pid file is no error")
	}
	os.MkdirAll(filepath.Dir(path), 0o755)
	os.WriteFile(path, []byte("garbage\n"), 0o644)
	if _, err := f.PID(); err == nil || !strings.Contains(err.Error(), "is not a pid") {
		t.Errorf("garbage: %v", err)
	}
	os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	if pid, err := f.PID(); err != nil || pid != os.Getpid() {
		t.Errorf("PID = %d, %v; want %d", pid, err, os.Getpid())
	}
}

// TestWatch: becoming master and leaving it are reported, a BACKUP first
// reading is not, and a keepalived that died leaving MASTER in its state
// file is not the master.
func TestWatch(t *testing.T) {
	dir := t.TempDir()
	state, pid := filepath.Join(dir, "state"), filepath.Join(dir, "keepalived.pid")
	live := []byte(strconv.Itoa(os.Getpid()) + "\n") // a live keepalived
	if err := os.WriteFile(pid, live, 0o644); err != nil {
		t.Fatal(err)
	}
	k := New(Options{StateFile: state, PIDFile: pid}, slog.New(slog.DiscardHandler))
	changes := make(chan bool, 4)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go k.Watch(ctx, 5*time.Millisecond, func(m bool) { changes <- m })
	expect := func(what string, want bool) {
		t.Helper()
		select {
		case m := <-changes:
			if m != want {
				t.Fatalf("%s: reported master=%v, want %v", what, m, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no change reported", what)
		}
	}
	write := func(p string, b []byte) {
		t.Helper()
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(state, []byte("BACKUP\n"))
	time.Sleep(50 * time.Millisecond)
	select {
	case m := <-changes:
		t.Fatalf("BACKUP from unknown reported master=%v; want no change", m)
	default:
	}
	write(state, []byte("MASTER\n"))
	expect("MASTER", true)
	write(state, []byte("FAULT\n"))
	expect("FAULT", false)
	write(state, []byte("MASTER\n"))
	expect("MASTER again", true)
	write(pid, []byte("999999999\n")) // keepalived gone, MASTER left behind
	expect("keepalived dead", false)
}

// TestOwnerStandIn: with nothing of the peers' family to serve, the
// instance holds the stand-in address; once something is served, only
// that.
func TestOwnerStandIn(t *testing.T) {
	f := newFake(t)
	o := f.Owner(func() netip.Addr { return netip.MustParseAddr("192.168.121.240") })
	read := func() string {
		b, _ := os.ReadFile(f.Options().ConfigPath)
		return string(b)
	}
	if _, err := o.Sync(t.Context(), nil, nil); err != nil || !strings.Contains(read(), "192.168.121.240") {
		t.Fatalf("nothing served: %v; want the stand-in in:\n%s", err, read())
	}
	if _, err := o.Sync(t.Context(), addrs("192.168.121.201"), nil); err != nil || strings.Contains(read(), "192.168.121.240") {
		t.Fatalf("one served: %v; want no stand-in in:\n%s", err, read())
	}
}
