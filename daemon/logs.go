package daemon

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
)

// Logs are lbd's loggers for one command: to stderr and, with a log file,
// to that file too.
type Logs struct {
	// Log writes to stderr and the file.
	Log *slog.Logger
	// File writes to the file only, nil without one: an error printed on
	// stderr is recorded there without a second stderr line.
	File *slog.Logger
	// Reopen closes the file and opens it again by name (after logrotate
	// moved it away; lbd run calls it on SIGUSR1); without a file it does
	// nothing.
	Reopen func() error
	// Close closes the file; without one it does nothing.
	Close func()
}

// OpenLogs checks level ("" is info; debug, info, warn, error) and format
// (text or json) and returns the loggers writing to stderr and, when file
// is not empty, to file too: its directory is created 0755 when missing,
// the file 0640, appended to. An error names the flag (--log-level,
// --log-format) or the file.
func OpenLogs(stderr io.Writer, file, format, level string) (*Logs, error) {
	var lv slog.Level // "" is info
	if err := lv.UnmarshalText([]byte(level)); level != "" && err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	ho := &slog.HandlerOptions{Level: lv}
	newHandler := func(w io.Writer) (slog.Handler, error) {
		switch format {
		case "text":
			return slog.NewTextHandler(w, ho), nil
		case "json":
			return slog.NewJSONHandler(w, ho), nil
		}
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
	h, err := newHandler(stderr)
	if err != nil {
		return nil, err
	}
	l := &Logs{Reopen: func() error { return nil }, Close: func() {}}
	if file != "" {
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			return nil, fmt.Errorf("log file: %w", err)
		}
		f, err := OpenLogFile(file)
		if err != nil {
			return nil, err
		}
		fh, _ := newHandler(f)
		h = slog.NewMultiHandler(h, fh)
		l.File = slog.New(fh)
		l.Reopen, l.Close = f.Reopen, func() { f.Close() }
	}
	l.Log = slog.New(h)
	return l, nil
}
