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
	// Pending says the reload was asked for and not confirmed in time:
	// haproxy may still be loading the new files, so they were left in
	// place, and the next Apply confirms the reload or retries it.
	Pending bool
	Err     error
}

func (e *ReloadError) Error() string {
	if e.Pending {
		return "reload haproxy (" + e.Mode + "): not confirmed, the new files stay in place and the next sync confirms or retries: " + e.Err.Error()
	}
	return "reload haproxy (" + e.Mode + "): " + e.Err.Error()
}

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
	b.awaitPeers(ctx)
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
	timeout := o.ReloadTimeoutFor(b.services)
	ctx, cancel := context.WithTimeout(ctx, timeout)
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
			// Not a failure yet: the master may still be loading the
			// files, so they must stay where they are.
			err := fmt.Errorf("no new worker within %v (reloads %d -> %d, workers %v -> %v)", timeout, before.reloads, last.reloads, before.workers, last.workers)
			if lastErr != nil {
				err = fmt.Errorf("no new worker within %v: %w", timeout, lastErr)
			}
			return &ReloadError{Mode: mode, Pending: true, Err: err}
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// isClosed reports whether err is the peer closing the connection.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "connection reset")
}

// probeMaster is the default probe: "show proc" on the master socket.
func (b *Backend) probeMaster(ctx context.Context) (procState, error) {
	if !isSocket(b.o.MasterSocket) {
		return procState{}, fmt.Errorf("no master socket at %s", b.o.MasterSocket)
	}
	return masterCLI{path: b.o.MasterSocket}.showProc(ctx)
}

// processAlive reports whether pid exists (EPERM: it does, as another user's).
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// errPendingFailed says the master reports that the pending reload failed.
var errPendingFailed = errors.New("haproxy master reports the pending reload failed; the previous workers keep serving; its log says why")

// settle decides what a reload marker left by an earlier pass means, from
// what the master says now against what it said before that reload:
// confirmed (true, nil): haproxy serves the files; owed (false, nil): the
// reload was never asked for or haproxy is gone, so reload now;
// in progress: a pending *ReloadError, and no other reload may start;
// failed: errPendingFailed.
func (b *Backend) settle(ctx context.Context, p *pending) (bool, error) {
	if p.Master == 0 {
		return false, nil // nothing to compare with
	}
	inProgress := func(why string) error {
		return &ReloadError{Mode: "master CLI", Pending: true, Err: fmt.Errorf(
			"the reload asked at %s is still in progress (%s); not starting another", p.Since.Format(time.RFC3339), why)}
	}
	st, err := b.probe(ctx)
	if err != nil {
		// The master refuses connections while it re-executes.
		if b.alive(p.Master) {
			return false, inProgress(fmt.Sprintf("master %d is alive and its CLI does not answer: %v", p.Master, err))
		}
		return false, nil
	}
	if st.master != p.Master {
		// haproxy was restarted as a whole: it read the files at start.
		return len(st.workers) > 0, nil
	}
	if st.reloads <= p.Reloads {
		return false, nil // the reload was never asked for
	}
	if slices.ContainsFunc(st.workers, func(w int) bool { return !slices.Contains(p.Workers, w) }) {
		return true, nil
	}
	if st.failed > 0 {
		return false, errPendingFailed
	}
	return false, inProgress(fmt.Sprintf("master %d counted the reload, no new worker yet", p.Master))
}

// PeerResyncWait bounds how long a reload waits for the running worker's
// peers section to be ready to hand its stick tables over (see
// awaitPeers): haproxy 2.6 gives up waiting for a lesson from the old
// process after 5 s and for one from remote peers after 5 s more.
const PeerResyncWait = 11 * time.Second

// awaitPeers waits, at most b.peerWait, until the running worker can
// teach its stick tables to the next one. haproxy 2.6's old worker
// pushes its tables to the new one at a soft stop only once its own
// resync is finished ("show peers" flags 0x1 and 0x2, learnt from the old
// process and from remote peers, or given up on); before that it stops
// without a word and the new worker starts with empty tables. A worker
// started afresh, or from a predecessor that could not teach, is in that
// state for 5 to 10 s: a reload then would lose every ClientIP affinity.
// With no peers section, no stats socket or no answer there is nothing
// to wait for.
func (b *Backend) awaitPeers(ctx context.Context) {
	if b.peerWait <= 0 || !isSocket(b.o.StatsSocket) {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, b.peerWait)
	defer cancel()
	start := time.Now()
	for {
		out, err := b.stats(ctx, "show peers")
		if err != nil || peersReady(out, PeersSection) {
			if waited := time.Since(start); waited > 100*time.Millisecond {
				b.log.Info("waited for haproxy's peers to be ready to hand the stick tables over", "waited", waited.Round(time.Millisecond))
			}
			return
		}
		select {
		case <-ctx.Done():
			b.log.Warn("haproxy's peers section is not ready to hand its stick tables to the next worker; reloading anyway: ClientIP affinity may be lost", "waited", b.peerWait)
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// peersReady reports whether "show peers" says that peers section name
// finished its resync (flags 0x1 and 0x2 set), or lacks the section.
//
//	0x55fc19319d50: [07/Dec/2026:15:36:32] id=lbd disabled=0 flags=0x11 resync_timeout=3s task_calls=5
func peersReady(out, name string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || !slices.Contains(f, "id="+name) {
			continue
		}
		for _, w := range f {
			if v, ok := strings.CutPrefix(w, "flags="); ok {
				n, err := strconv.ParseUint(strings.TrimPrefix(v, "0x"), 16, 64)
				return err == nil && n&0x3 == 0x3
			}
		}
	}
	return true
}
