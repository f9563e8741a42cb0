package haproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// masterCLI talks to haproxy's master CLI socket (haproxy -S). haproxy 2.6
// answers "reload" by re-executing the master, which closes the connection
// without a status; the outcome is read afterwards from "show proc".
type masterCLI struct {
	path string
}

// command sends one command and returns everything the master answers
// before it closes the connection.
func (m masterCLI) command(ctx context.Context, cmd string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", m.path)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return nil, err
	}
	// The master answers once it sees the end of the input; without it,
	// it waits for more commands.
	if err := c.(*net.UnixConn).CloseWrite(); err != nil {
		return nil, err
	}
	return io.ReadAll(c)
}

// procState is what "show proc" says about the processes.
type procState struct {
	master  int // master PID
	reloads int // the master's reload count
	failed  int // failed reloads since the last success
	workers []int
}

// parseShowProc reads "show proc" output (haproxy 2.6):
//
//	#<PID>          <type>          <reloads>       <uptime>        <version>
//	15000           master          3 [failed: 1]   0d00h00m06s     2.6.12
//	# workers
//	15039           worker          1               0d00h00m03s     2.6.12
//	# programs
func parseShowProc(out []byte) (procState, error) {
	var st procState
	found := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || strings.HasPrefix(f[0], "#") {
			continue
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		switch f[1] {
		case "master":
			found = true
			st.master = pid
			st.reloads, _ = strconv.Atoi(f[2])
			if len(f) >= 5 && f[3] == "[failed:" {
				st.failed, _ = strconv.Atoi(strings.TrimSuffix(f[4], "]"))
			}
		case "worker":
			st.workers = append(st.workers, pid)
		}
	}
	if !found {
		return st, fmt.Errorf("no master line in show proc output %q", out)
	}
	return st, nil
}

func (m masterCLI) showProc(ctx context.Context) (procState, error) {
	out, err := m.command(ctx, "show proc")
	if err != nil {
		return procState{}, err
	}
	return parseShowProc(out)
}

// ReloadError says that haproxy did not take the new configuration up. The
// running workers keep serving the configuration they had.
type ReloadError struct {
	// Mode is how the reload was asked for: "master CLI", "systemctl" or
	// the operator's command.
	Mode string
	Err  error
}

func (e *ReloadError) Error() string { return "reload haproxy (" + e.Mode + "): " + e.Err.Error() }

func (e *ReloadError) Unwrap() error { return e.Err }

// isSocket reports whether path is a unix socket.
func isSocket(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode()&os.ModeSocket != 0
}

// reloadHaproxy is the default reload: ask for a reload the configured way
// and, when the master socket exists, wait (bounded) for a worker that was
// not there before. A master that counted the reload but reports it failed
// fails at once.
func (b *Backend) reloadHaproxy(ctx context.Context) error {
	o := b.o
	m := masterCLI{path: o.MasterSocket}
	haveMaster := isSocket(o.MasterSocket)
	mode := o.Reload
	switch {
	case mode == "" && haveMaster:
		mode = "master CLI"
	case mode == "":
		mode = "systemctl"
	}
	fail := func(err error) error { return &ReloadError{Mode: mode, Err: err} }
	// haproxy may start after lbd (the notes want it that way): then there
	// is nothing to reload, and it reads the files when it starts.
	notRunning := func(why string) error {
		b.log.Warn("haproxy is not running; it will load the new files when it starts", "backend", "haproxy", "why", why)
		return nil
	}

	var before procState
	if haveMaster {
		var err error
		if before, err = m.showProc(ctx); err != nil {
			if o.Reload == "" && errors.Is(err, syscall.ECONNREFUSED) {
				return notRunning("stale master socket " + o.MasterSocket + ": connection refused")
			}
			return fail(fmt.Errorf("show proc on %s: %w", o.MasterSocket, err))
		}
	}
	if mode == "systemctl" && o.Reload == "" {
		if out, err := b.run(ctx, "systemctl", "is-active", "haproxy"); err != nil {
			return notRunning(fmt.Sprintf("no master socket at %s and systemctl is-active haproxy: %v %s", o.MasterSocket, err, bytes.TrimSpace(out)))
		}
	}
	switch mode {
	case "master CLI":
		// The master re-executes itself and drops the connection; an error
		// while reading the (empty) answer is expected and not a failure.
		if _, err := m.command(ctx, "reload"); err != nil && !isClosed(err) {
			return fail(fmt.Errorf("send reload to %s: %w", o.MasterSocket, err))
		}
	case "systemctl":
		if out, err := b.run(ctx, "systemctl", "reload", "haproxy"); err != nil {
			return fail(fmt.Errorf("%w: %s", err, bytes.TrimSpace(out)))
		}
	default:
		if out, err := b.run(ctx, "/bin/sh", "-c", o.Reload); err != nil {
			return fail(fmt.Errorf("%w: %s", err, bytes.TrimSpace(out)))
		}
	}
	if !haveMaster {
		return nil // nothing to confirm with: the command's status is all we have
	}
	ctx, cancel := context.WithTimeout(ctx, o.ReloadTimeout)
	defer cancel()
	var last procState
	var lastErr error
	for {
		st, err := m.showProc(ctx)
		if err == nil {
			last, lastErr = st, nil
			if st.master != before.master && len(st.workers) > 0 {
				return nil // haproxy was restarted as a whole and has a worker
			}
			if st.reloads > before.reloads {
				if slices.ContainsFunc(st.workers, func(p int) bool { return !slices.Contains(before.workers, p) }) {
					return nil
				}
				if st.failed > 0 {
					return fail(fmt.Errorf("haproxy master reports the reload failed (%d failed since the last success); the previous workers keep serving; its log says why", st.failed))
				}
			}
		} else {
			lastErr = err // the master is re-executing; try again
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return fail(fmt.Errorf("no new worker within %v: %w", o.ReloadTimeout, lastErr))
			}
			return fail(fmt.Errorf("no new worker within %v (reloads %d -> %d, workers %v -> %v)", o.ReloadTimeout, before.reloads, last.reloads, before.workers, last.workers))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// isClosed reports whether err is the peer closing the connection.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "connection reset")
}
