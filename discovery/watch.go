package discovery

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
)

// DefaultKeepAlive is how often a watch probes its SSH connection when the
// caller gives no interval.
const DefaultKeepAlive = 15 * time.Second

// The watch commands: one per resource type, since kubectl cannot watch
// several types in one command. -o name prints one line per event (and
// first one line per existing object), which is all a trigger needs.
const (
	watchTail = " --all-namespaces --watch -o name"
	// Resource types as kubectl spells them.
	resServices  = "services"
	resSlices    = "endpointslices.discovery.k8s.io"
	resEndpoints = "endpoints"
)

// ErrWatchEnded is wrapped by the error [Source.Watch] returns when kubectl
// ended a watch by itself with exit status 0, as it does when the API
// server closes a long watch (after 30 to 60 minutes by default). Nothing
// is wrong; the caller starts a new watch.
var ErrWatchEnded = errors.New("watch ended by the remote side")

// Watch streams changes of the cluster's services and endpoints: it runs
//
//	<kubectl> get services --all-namespaces --watch -o name
//	<kubectl> get endpointslices.discovery.k8s.io --all-namespaces --watch -o name
//
// (endpoints instead of endpointslices once the Source found the cluster
// has no EndpointSlice API) as two sessions on the Source's one SSH
// connection, and calls event with the resource type for every line either
// prints: one per existing object first, then one per change. The lines
// are a trigger, not data: the caller answers them with [Source.Discover].
// event is called from two goroutines and must not block.
//
// Watch blocks until ctx ends, then returns nil, or until one of the watches
// ends, then stops the other and returns why: a *CommandError when the
// remote command failed or the connection broke (no exit status), an error
// wrapping ErrWatchEnded when kubectl ended normally. A cluster without the
// EndpointSlice API switches the Source to Endpoints for good, as Discover
// does, and Watch returns the *CommandError; the next Watch uses
// Endpoints.
//
// keepAlive is how often the connection is probed while the watch is idle
// (zero: DefaultKeepAlive); a master that does not answer within that time
// again counts as gone and the connection is closed, so a watch never hangs
// on a dead network path.
//
// The remote commands run under a pseudo-terminal. OpenSSH refuses signal
// requests for root's sessions, and a kubectl blocked on a quiet watch
// would never notice its output closed; with a terminal, closing the
// session (or losing the connection) hangs it up, and the kernel sends
// kubectl SIGHUP. The terminal merges stderr into the output, so the
// *CommandError's Stderr holds the last lines the command printed.
func (s *Source) Watch(ctx context.Context, keepAlive time.Duration, event func(resource string)) error {
	if keepAlive <= 0 {
		keepAlive = DefaultKeepAlive
	}
	endpoints := resSlices
	if s.isLegacy() {
		endpoints = resEndpoints
	}

	return s.watchEach(ctx, []string{resServices, endpoints}, func(ctx context.Context, res string) error {
		return s.stream(ctx, s.kubectl+" get "+res+watchTail, keepAlive, func([]byte) { event(res) })
	})
}

// watchEach runs one watch session per resource with watch, until the
// first ends; then it stops the others. A cancelled ctx returns nil;
// otherwise the error names the resource whose session ended first, and
// a failed EndpointSlice watch may switch the Source to Endpoints.
func (s *Source) watchEach(ctx context.Context, resources []string, watch func(ctx context.Context, res string) error) error {
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	type result struct {
		res string
		err error
	}
	done := make(chan result, len(resources))
	for _, res := range resources {
		go func() { done <- result{res, watch(wctx, res)} }()
	}
	first := <-done
	stop()
	for range len(resources) - 1 {
		<-done
	}
	if ctx.Err() != nil {
		return nil
	}
	if first.res == resSlices {
		s.fallBack(first.err)
	}
	return fmt.Errorf("watch %s on %s: %w", first.res, s.master, first.err)
}

// Limits of one watch's output: a line longer than maxWatchLine is an
// error (-o name lines are short); the last watchTailLines lines are kept
// for the error message.
const (
	maxWatchLine   = 64 << 10
	watchTailLines = 8
)

// stream runs cmd on the master under a pseudo-terminal and calls line for
// each non-empty line of its output, until the command ends (exit status
// 0 gives an error wrapping ErrWatchEnded, any other a *CommandError), the
// connection breaks (a *CommandError) or ctx ends (nil). Connecting is bounded by the connect timeout, not the command
// timeout: a watch runs for as long as it lasts. While it runs the
// connection is probed every keepAlive.
func (r *sshRunner) stream(ctx context.Context, cmd string, keepAlive time.Duration, line func([]byte)) error {
	return r.streamWith(ctx, cmd, keepAlive, func(out io.Reader, note func(string)) error {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 4096), maxWatchLine)
		for sc.Scan() {
			b := []byte(strings.TrimRight(sc.Text(), "\r"))
			if len(b) == 0 {
				continue
			}
			note(string(b))
			line(b)
		}
		return sc.Err()
	})
}

// streamWith is stream with the reading of the output left to consume,
// which runs in its own goroutine and reads out until it ends or fails;
// note keeps a line for the error message (the last watchTailLines lines
// are kept). An error from consume ends the stream: it is returned as a
// *CommandError with no exit status, the remote command being hung up.
// Every byte read from out counts in the runner's received bytes.
func (r *sshRunner) streamWith(ctx context.Context, cmd string, keepAlive time.Duration, consume func(out io.Reader, note func(string)) error) error {
	cctx, cancel := context.WithTimeout(ctx, r.connectTimeout)
	c, sess, err := r.openSession(cctx, cmd)
	cancel()
	if err != nil {
		return err
	}
	defer sess.Close()

	var tail []string
	note := func(l string) {
		if len(tail) == watchTailLines {
			tail = tail[1:]
		}
		tail = append(tail, l)
	}
	fail := func(status int, err error) error {
		return &CommandError{Host: r.addr, Command: cmd, ExitStatus: status, Stderr: Printable(strings.Join(tail, "\n")), Err: err}
	}
	// No echo, and no "\n" -> "\r\n" on output; "\r" is trimmed anyway.
	modes := ssh.TerminalModes{ssh.ECHO: 0, ssh.ONLCR: 0, ssh.TTY_OP_ISPEED: 38400, ssh.TTY_OP_OSPEED: 38400}
	if err := sess.RequestPty("dumb", 24, 512, modes); err != nil {
		return fail(-1, fmt.Errorf("request pty: %w", err))
	}
	out, err := sess.StdoutPipe()
	if err != nil {
		return fail(-1, err)
	}
	if err := sess.Start(cmd); err != nil {
		return fail(-1, err)
	}

	// Read in the background; the foreground waits for the end, the
	// caller or a failed keepalive.
	readDone := make(chan error, 1)
	go func() {
		readDone <- consume(&countingReader{r: out, n: &r.received}, note)
	}()
	probe := time.NewTicker(keepAlive)
	defer probe.Stop()
	for {
		select {
		case rerr := <-readDone:
			if rerr != nil {
				// The output is bad (or unreadable): hang up the
				// command rather than wait for it.
				_ = sess.Close()
				return fail(-1, fmt.Errorf("read output: %w", rerr))
			}
			// Output is done: the command ended or the channel closed.
			err := sess.Wait()
			if err == nil {
				return fmt.Errorf("ssh %s: %q: %w", r.addr, cmd, ErrWatchEnded)
			}
			return fail(r.exitStatus(c, err))
		case <-ctx.Done():
			// Closing the session hangs up the terminal, which ends the
			// remote command. Should the server not confirm (it waits for
			// the command), the connection goes too, so nothing lingers.
			_ = sess.Close()
			select {
			case <-readDone:
			case <-time.After(2 * time.Second):
				r.drop(c)
				<-readDone
			}
			return nil
		case <-probe.C:
			if err := keepAliveOnce(c, keepAlive); err != nil {
				r.log.Warn("ssh master does not answer keepalives; closing the connection", "master", r.user+"@"+r.addr, "err", err)
				r.drop(c)
				<-readDone
				_ = sess.Wait()
				return fail(-1, fmt.Errorf("connection lost: %w", err))
			}
		}
	}
}

// countingReader adds the bytes read through it to n.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.Add(int64(k))
	return k, err
}

// keepAliveOnce sends one keepalive@openssh.com request on c and waits at
// most timeout for the answer. Any answer, even a refusal, proves the
// master alive.
func keepAliveOnce(c *ssh.Client, timeout time.Duration) error {
	done := make(chan error, 1)
	go func() {
		_, _, err := c.SendRequest("keepalive@openssh.com", true, nil)
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("no answer to a keepalive within %v", timeout)
	}
}
