package daemon

import (
	"errors"
	"fmt"
	"os"
	"sync"
)

// OpenLogFile opens path for appending (created 0640).
func OpenLogFile(path string) (*LogFile, error) {
	l := &LogFile{path: path}
	if err := l.Reopen(); err != nil {
		return nil, err
	}
	return l, nil
}

// LogFile is a log file (--log-file) appended to, and reopened by name on
// demand (SIGUSR1), so that logrotate can rename it and lbd goes on
// writing to a fresh one. It is safe for concurrent use.
type LogFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

// Write appends p to the current file.
func (l *LogFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return 0, errors.New("log file closed")
	}
	return l.f.Write(p)
}

// Reopen opens the path again (created 0640) and closes the previous
// file. On error the previous file stays in use.
func (l *LogFile) Reopen() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("log file: %w", err)
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// Close closes the file; later writes fail.
func (l *LogFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
