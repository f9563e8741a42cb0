package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/lbd/lbd/daemon"
)

// openLog sets a.log to a logger writing to stderr and, when --log-file is
// set, to that file too (created 0640, appended to). The returned function
// closes the file.
func (a *app) openLog() (func(), error) {
	_, closer, err := a.openLogRotatable()
	return closer, err
}

// openLogRotatable is openLog that also returns reopen, which closes the
// log file and opens --log-file again (after logrotate moved it away; lbd
// run calls it on SIGUSR1). Without a log file reopen does nothing.
func (a *app) openLogRotatable() (reopen func() error, closer func(), err error) {
	var level slog.Level // "" is info
	if err := level.UnmarshalText([]byte(a.cfg.LogLevel)); a.cfg.LogLevel != "" && err != nil {
		return nil, nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", a.cfg.LogLevel)
	}
	ho := &slog.HandlerOptions{Level: level}
	newHandler := func(w io.Writer) (slog.Handler, error) {
		switch a.cfg.LogFormat {
		case "text":
			return slog.NewTextHandler(w, ho), nil
		case "json":
			return slog.NewJSONHandler(w, ho), nil
		}
		return nil, fmt.Errorf("--log-format %q: want text or json", a.cfg.LogFormat)
	}
	h, err := newHandler(a.stderr)
	if err != nil {
		return nil, nil, err
	}
	reopen, closer = func() error { return nil }, func() {}
	if a.cfg.LogFile != "" {
		if err := os.MkdirAll(filepath.Dir(a.cfg.LogFile), 0o755); err != nil {
			return nil, nil, fmt.Errorf("log file: %w", err)
		}
		f, err := daemon.OpenLogFile(a.cfg.LogFile)
		if err != nil {
			return nil, nil, err
		}
		fh, _ := newHandler(f)
		h = slog.NewMultiHandler(h, fh)
		a.fileLog = slog.New(fh)
		// The file closes when run returns, after its last error line.
		reopen, a.closeLog = f.Reopen, func() { f.Close() }
	}
	a.log = slog.New(h)
	return reopen, closer, nil
}

// openLogStderr is openLog for the read-only commands (plan, status,
// check): they log to stderr only and never touch the log file.
func (a *app) openLogStderr() (func(), error) {
	c := a.cfg
	c.LogFile = ""
	b := &app{cfg: c, stderr: a.stderr}
	closer, err := b.openLog()
	a.log = b.log
	return closer, err
}
