package keepalived

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrNotRunning means keepalived's pid file is missing or names no live
// process: the new file is in place and keepalived reads it when it starts.
var ErrNotRunning = errors.New("keepalived is not running")

// Keepalived applies the rendered configuration on this LB and reads back
// what keepalived and its hook report. Its methods are safe for one
// caller at a time.
type Keepalived struct {
	o   Options
	log *slog.Logger

	// check runs keepalived's config test on the file at path.
	check func(ctx context.Context, path string) error
	// reload tells the running keepalived to reread its configuration.
	reload func(ctx context.Context) error
}

// New returns a Keepalived for o (defaults applied; call o.Validate
// before). It does no I/O.
func New(o Options, log *slog.Logger) *Keepalived {
	k := &Keepalived{o: o.WithDefaults(), log: log}
	k.check = k.configTest
	k.reload = k.sighup
	return k
}

// Options returns the options in use, defaults filled in.
func (k *Keepalived) Options() Options { return k.o }

// Apply makes the include file list addrs and keepalived use it. It
// installs the notify hook when its bytes differ, then renders; when the
// rendering equals the file in place it returns false and does nothing
// more. Otherwise the new bytes are staged beside the file, checked with
// `keepalived -t` (a failure keeps the old file and is returned), renamed
// into place, and keepalived is sent SIGHUP. It returns whether the file
// changed; the error may then be ErrNotRunning (the file is in place).
func (k *Keepalived) Apply(ctx context.Context, addrs []netip.Addr) (changed bool, err error) {
	if _, err := writeIfChanged(k.o.NotifyScript, NotifyScript(), 0o755, nil); err != nil {
		return false, fmt.Errorf("keepalived notify script: %w", err)
	}
	o := k.o
	o.Addresses = addrs
	conf, err := Render(o)
	if err != nil {
		return false, err
	}
	changed, err = writeIfChanged(k.o.ConfigPath, conf, 0o644, func(staged string) error {
		return k.check(ctx, staged)
	})
	if err != nil || !changed {
		return false, err
	}
	k.log.Info("keepalived config changed", "path", k.o.ConfigPath, "addresses", len(normalize(addrs)))
	if err := k.reload(ctx); err != nil {
		return true, fmt.Errorf("reload keepalived: %w", err)
	}
	return true, nil
}

// configTest runs keepalived's own config test. The include file alone
// is not a whole configuration: keepalived counts running scripts without
// enable_script_security as an error, so the test wraps it in the
// global_defs that hack/ha/keepalived.conf has.
func (k *Keepalived) configTest(ctx context.Context, path string) error {
	wrapper := path + ".test"
	body := fmt.Sprintf("global_defs {\n    enable_script_security\n    script_user root\n}\ninclude %s\n", path)
	if err := os.WriteFile(wrapper, []byte(body), 0o600); err != nil {
		return fmt.Errorf("keepalived config test: %w", err)
	}
	defer os.Remove(wrapper)
	out, err := exec.CommandContext(ctx, k.o.KeepalivedBin, "--config-test", "--log-console", "-f", wrapper).CombinedOutput()
	if err != nil {
		return &ConfigError{Output: strings.TrimSpace(string(out)), Err: err}
	}
	return nil
}

// ConfigError is a rendering keepalived's config test refused; Output is
// what keepalived printed.
type ConfigError struct {
	Output string
	Err    error
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("keepalived --config-test: %v: %s", e.Err, e.Output)
}

func (e *ConfigError) Unwrap() error { return e.Err }

// sighup sends SIGHUP to the pid in PIDFile.
func (k *Keepalived) sighup(context.Context) error {
	return k.signal(syscall.SIGHUP)
}

// Running returns nil when the pid in PIDFile is alive, else an error
// (wrapping ErrNotRunning when the file or the process is missing).
// State alone cannot tell: a keepalived killed with SIGKILL leaves its
// state file saying MASTER although it no longer is one.
func (k *Keepalived) Running() error { return k.signal(0) }

// signal sends sig to the pid in PIDFile; 0 only checks that it lives.
func (k *Keepalived) signal(sig syscall.Signal) error {
	b, err := os.ReadFile(k.o.PIDFile)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", k.o.PIDFile, ErrNotRunning)
	}
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("%s: bad pid %q", k.o.PIDFile, strings.TrimSpace(string(b)))
	}
	if err := syscall.Kill(pid, sig); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("%s: pid %d: %w", k.o.PIDFile, pid, ErrNotRunning)
		}
		return fmt.Errorf("signal pid %d: %w", pid, err)
	}
	return nil
}

// State returns the VRRP state the notify hook last wrote: StateMaster,
// StateBackup, StateFault or StateStop. A missing file (keepalived has
// not made a transition since boot) is an error wrapping fs.ErrNotExist.
// The file is only as fresh as keepalived: a keepalived killed with
// SIGKILL leaves its last state, and its addresses, behind.
func (k *Keepalived) State() (string, error) {
	b, err := os.ReadFile(k.o.StateFile)
	if err != nil {
		return "", fmt.Errorf("HA state: %w", err)
	}
	s := strings.TrimSpace(string(b))
	switch s {
	case StateMaster, StateBackup, StateFault, StateStop:
		return s, nil
	}
	return "", fmt.Errorf("HA state %s: unknown state %q", k.o.StateFile, s)
}

// WriteHealth writes the track file keepalived watches: "0" when ok, "1"
// otherwise, atomically and only when the value changes. Writing 1 on the
// master makes it go to FAULT and give its addresses up.
func (k *Keepalived) WriteHealth(ok bool) error {
	v := []byte("1\n")
	if ok {
		v = []byte("0\n")
	}
	if _, err := writeIfChanged(k.o.TrackFile, v, 0o644, nil); err != nil {
		return fmt.Errorf("HA health file: %w", err)
	}
	return nil
}

// writeIfChanged writes data to path unless the file already holds
// exactly data. The bytes go to a temp file in the same directory, are
// synced, passed to check (when not nil: a failure leaves path as it
// was), then renamed over path; the directory is synced too.
func writeIfChanged(path string, data []byte, mode fs.FileMode, check func(staged string) error) (bool, error) {
	old, err := os.ReadFile(path)
	if err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return false, err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op after the rename
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("write %s: %w", tmp, err)
	}
	if check != nil {
		if err := check(tmp); err != nil {
			return false, err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return true, nil
}
