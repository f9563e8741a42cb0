package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// lockPoll is how often Lock retries a held lock.
const lockPoll = 50 * time.Millisecond

// ErrLocked is wrapped by the *LockedError that [Lock] returns when another
// process holds the lock.
var ErrLocked = errors.New("store: locked by another process")

// LockedError says that another process held the lock for the whole wait.
type LockedError struct {
	// Path is the lock file.
	Path string
	// PID is the holder's process id as it wrote it into the lock file; 0
	// when unknown.
	PID int
	// Waited is how long Lock tried.
	Waited time.Duration
}

// Error says who holds which lock file and how long Lock waited, e.g.
// "store: another lbd holds /opt/LoadBalancer.sqlite.db.lock (pid 4242); waited 30s".
func (e *LockedError) Error() string {
	pid := "pid unknown"
	if e.PID > 0 {
		pid = "pid " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("store: another lbd holds %s (%s); waited %v", e.Path, pid, e.Waited)
}

// Unwrap makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Unwrap() error { return ErrLocked }

// Lock takes an exclusive flock(2) on dbPath+".lock" (created mode 0600), so
// that two lbd processes (a cron run overlapping the previous one) never
// sync at once. Lock runs before [Open], so like Open it creates the
// database's directory (mode 0700) when it is missing. It retries until wait has passed, then returns a
// *LockedError naming the holder's pid; it returns ctx's error when ctx ends
// first. The holder's pid is written into the file for that message.
//
// unlock releases the lock; calling it again does nothing. The lock also ends when the process exits, so a
// crashed lbd never leaves it held. The file itself stays: removing it would
// let two processes lock two different files of the same name.
func Lock(ctx context.Context, dbPath string, wait time.Duration) (unlock func() error, err error) {
	path := dbPath + ".lock"
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: lock %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: lock %s: %w", path, err)
	}
	if err := restrictMode(path); err != nil {
		f.Close()
		return nil, fmt.Errorf("store: lock %s: %w", path, err)
	}
	start := time.Now()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("store: lock %s: %w", path, err)
		}
		waited := time.Since(start)
		if waited >= wait {
			pid := readPID(f)
			f.Close()
			return nil, &LockedError{Path: path, PID: pid, Waited: wait}
		}
		t := time.NewTimer(min(lockPoll, wait-waited))
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("store: lock %s: %w", path, ctx.Err())
		case <-t.C:
		}
	}
	if err := writePID(f); err != nil {
		f.Close() // closing releases the flock
		return nil, fmt.Errorf("store: lock %s: %w", path, err)
	}
	// Once: a second call must not flock a file descriptor number that
	// may by then belong to another file.
	unlock = sync.OnceValue(func() error {
		// Clear the pid first, while still holding the lock, so that a
		// stale pid is never read as the holder's.
		f.Truncate(0)
		errUnlock := syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		errClose := f.Close()
		if err := errors.Join(errUnlock, errClose); err != nil {
			return fmt.Errorf("store: unlock %s: %w", path, err)
		}
		return nil
	})
	return unlock, nil
}

func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return err
}

// readPID returns the pid in the lock file, 0 if it holds none.
func readPID(f *os.File) int {
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil {
		return 0
	}
	return pid
}
