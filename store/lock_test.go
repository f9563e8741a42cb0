package store_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lbd/lbd/store"
)

// helperEnv names the database path for TestHelperLock when this test
// binary is re-run as the lock-holding process.
const helperEnv = "LBD_STORE_LOCK_HELPER_DB"

// TestHelperLock is not a test: run by startHolder in a child process, it
// takes the lock, says "locked" on stdout and holds the lock until its
// stdin closes.
func TestHelperLock(t *testing.T) {
	path := os.Getenv(helperEnv)
	if path == "" {
		t.Skip("helper process for TestLockBetweenProcesses")
	}
	unlock, err := store.Lock(context.Background(), path, 5*time.Second)
	if err != nil {
		fmt.Fprintln(os.Stdout, "error:", err)
		os.Exit(2)
	}
	fmt.Fprintln(os.Stdout, "locked")
	io.Copy(io.Discard, os.Stdin)
	if err := unlock(); err != nil {
		fmt.Fprintln(os.Stdout, "error:", err)
		os.Exit(3)
	}
	os.Exit(0)
}

// startHolder runs TestHelperLock in a new process and returns once it
// holds the lock on path. Closing release ends the child's hold.
func startHolder(t *testing.T, path string) (cmd *exec.Cmd, release io.Closer) {
	t.Helper()
	cmd = exec.Command(os.Args[0], "-test.run=^TestHelperLock$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- strings.TrimSpace(s)
		io.Copy(io.Discard, stdout)
	}()
	select {
	case s := <-line:
		if s != "locked" {
			t.Fatalf("helper process: %q", s)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("helper process did not take the lock within 20s")
	}
	return cmd, stdin
}

func TestLockBetweenProcesses(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "LoadBalancer.sqlite.db")
	holder, release := startHolder(t, path)

	const wait = 300 * time.Millisecond
	start := time.Now()
	unlock, err := store.Lock(ctx, path, wait)
	waited := time.Since(start)
	if err == nil {
		unlock()
		t.Fatal("Lock succeeded while another process holds it")
	}
	var le *store.LockedError
	if !errors.As(err, &le) || !errors.Is(err, store.ErrLocked) {
		t.Fatalf("error = %v (%T), want a *LockedError wrapping ErrLocked", err, err)
	}
	want := fmt.Sprintf("store: another lbd holds %s.lock (pid %d); waited 300ms", path, holder.Process.Pid)
	if err.Error() != want {
		t.Errorf("error = %q\nwant    %q", err, want)
	}
	if waited < wait {
		t.Errorf("Lock gave up after %v, before the %v wait", waited, wait)
	}
	if fi, err := os.Stat(path + ".lock"); err != nil || fi.Mode() != 0o600 {
		t.Errorf("lock file mode = %v, %v; want 0600", fi.Mode(), err)
	}

	// The holder releases while we wait: Lock takes it.
	go func() {
		time.Sleep(200 * time.Millisecond)
		release.Close()
	}()
	unlock, err = store.Lock(ctx, path, 20*time.Second)
	if err != nil {
		t.Fatalf("Lock after the holder released: %v", err)
	}
	if err := holder.Wait(); err != nil {
		t.Errorf("helper process: %v", err)
	}
	pid, _ := os.ReadFile(path + ".lock")
	if got, want := strings.TrimSpace(string(pid)), fmt.Sprint(os.Getpid()); got != want {
		t.Errorf("lock file holds pid %q, want ours, %s", got, want)
	}
	if err := unlock(); err != nil {
		t.Errorf("unlock: %v", err)
	}
	if err := unlock(); err != nil {
		t.Errorf("second unlock: %v", err)
	}
}

func TestLockFreedWhenHolderDies(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lbd.db")
	holder, _ := startHolder(t, path)
	if err := holder.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	holder.Wait()
	// The dead holder's pid is still in the file; the lock is not held.
	unlock, err := store.Lock(ctx, path, time.Second)
	if err != nil {
		t.Fatalf("Lock after the holder was killed: %v", err)
	}
	unlock()
}

func TestLockContextCanceled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lbd.db")
	startHolder(t, path)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := store.Lock(ctx, path, time.Minute)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error = %v, want context.DeadlineExceeded", err)
	}
	if errors.Is(err, store.ErrLocked) {
		t.Errorf("error %v says locked; the caller gave up first", err)
	}
}

func TestLockZeroWait(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lbd.db")
	unlock, err := store.Lock(ctx, path, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	// A second open file description in this process conflicts as well:
	// flock locks belong to the open file, not the process.
	_, err = store.Lock(ctx, path, 0)
	var le *store.LockedError
	if !errors.As(err, &le) || le.PID != os.Getpid() {
		t.Errorf("second Lock error = %v, want a *LockedError naming pid %d", err, os.Getpid())
	}
}

// Lock runs before Open, so it must create the database's directory as
// Open would (mode 0700), or --db in a new directory fails with ENOENT.
func TestLockCreatesDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "state")
	db := filepath.Join(dir, "lbd.db")
	unlock, err := store.Lock(context.Background(), db, 0)
	if err != nil {
		t.Fatalf("Lock in a missing directory: %v", err)
	}
	defer unlock()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("directory mode = %o, want 700", got)
	}
	if _, err := os.Stat(db + ".lock"); err != nil {
		t.Errorf("lock file: %v", err)
	}
}
