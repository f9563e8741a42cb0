package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
)

// openLog sets a.log to a logger writing to stderr and, when --log-file is
// set, to that file too (created 0640, appended to). The returned function
// closes the file.
func (a *app) openLog() (func(), error) {
	newHandler := func(w io.Writer) (slog.Handler, error) {
		switch a.cfg.logFormat {
		case "text":
			return slog.NewTextHandler(w, nil), nil
		case "json":
			return slog.NewJSONHandler(w, nil), nil
		}
		return nil, fmt.Errorf("--log-format %q: want text or json", a.cfg.logFormat)
	}
	h, err := newHandler(a.stderr)
	if err != nil {
		return nil, err
	}
	closer := func() {}
	if a.cfg.logFile != "" {
		if err := os.MkdirAll(filepath.Dir(a.cfg.logFile), 0o755); err != nil {
			return nil, fmt.Errorf("log file: %w", err)
		}
		f, err := os.OpenFile(a.cfg.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, fmt.Errorf("log file: %w", err)
		}
		fh, _ := newHandler(f)
		h = slog.NewMultiHandler(h, fh)
		closer = func() { f.Close() }
	}
	a.log = slog.New(h)
	return closer, nil
}

// openLogStderr is openLog for the read-only commands (plan, status,
// check): they log to stderr only and never touch the log file.
func (a *app) openLogStderr() (func(), error) {
	c := a.cfg
	c.logFile = ""
	b := &app{cfg: c, stderr: a.stderr}
	closer, err := b.openLog()
	a.log = b.log
	return closer, err
}
