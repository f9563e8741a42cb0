package discovery

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Output limits: kubectl's JSON for a large cluster is tens of megabytes;
// its stderr is only kept for the error message.
const (
	maxStdout = 256 << 20
	maxStderr = 2048
)

// HostKeyError is a master host key that known_hosts does not vouch for:
// unknown, changed (a possible man in the middle, or a reinstalled master)
// or revoked. Discovery stops; the operator must act.
type HostKeyError struct {
	// Host is the address dialed, host:port.
	Host string
	// KeyType and Fingerprint (ssh.FingerprintSHA256, "SHA256:...")
	// identify the key the server offered.
	KeyType     string
	Fingerprint string
	// Changed: known_hosts holds other keys for Host.
	Changed bool
	// Revoked: known_hosts marks this key @revoked.
	Revoked bool
	// Known lists the known_hosts entries for Host, as "file:line".
	Known []string
	// KnownHosts is the file that was consulted.
	KnownHosts string
	// Err is the knownhosts error (*knownhosts.KeyError or
	// *knownhosts.RevokedError).
	Err error
}

// Error says which host, which key (type and SHA256 fingerprint) and, in
// capitals, whether the key CHANGED or is REVOKED.
func (e *HostKeyError) Error() string {
	switch {
	case e.Revoked:
		return fmt.Sprintf("ssh host key of %s is REVOKED in %s: the server offered %s %s",
			e.Host, strings.Join(e.Known, ", "), e.KeyType, e.Fingerprint)
	case e.Changed:
		return fmt.Sprintf("ssh host key of %s has CHANGED: the server offered %s %s, but %s holds a different key (%s); "+
			"someone may be intercepting the connection, or the master was reinstalled: check the fingerprint on the master before replacing the entry",
			e.Host, e.KeyType, e.Fingerprint, e.KnownHosts, strings.Join(e.Known, ", "))
	}
	return fmt.Sprintf("ssh host key of %s is unknown: the server offered %s %s, which is not in %s; "+
		"check the fingerprint on the master (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then add it (ssh-keyscan)",
		e.Host, e.KeyType, e.Fingerprint, e.KnownHosts)
}

// Unwrap returns the knownhosts error.
func (e *HostKeyError) Unwrap() error { return e.Err }

// CommandError is a remote command that failed: it exited non-zero, was
// killed, timed out, or lost its connection.
type CommandError struct {
	// Host is the master, host:port.
	Host    string
	Command string
	// ExitStatus is the remote exit status; -1 when the command ended
	// without one (timeout, signal, lost connection).
	ExitStatus int
	// Stderr is the command's standard error, trimmed, capped at about
	// 2 KB and made [Printable]: it is the master's raw text, and it ends up
	// on terminals (lbd status prints the last sync's error).
	Stderr string
	// Err is the cause: an *ssh.ExitError, a context error, or a
	// connection error.
	Err error
}

// Error says the host, the command, the exit status (or the cause when
// there is none) and stderr, escaped with [Printable].
func (e *CommandError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ssh %s: %q: ", e.Host, e.Command)
	if e.ExitStatus >= 0 {
		fmt.Fprintf(&b, "exit status %d", e.ExitStatus)
	} else {
		b.WriteString(e.Err.Error())
	}
	if e.Stderr != "" {
		fmt.Fprintf(&b, ": stderr: %s", Printable(e.Stderr))
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *CommandError) Unwrap() error { return e.Err }

// Printable returns s with every rune a terminal could act on escaped as
// in a Go string literal: control characters (\n, \x1b, \u0085), other
// non-printing runes (such as U+202E, which reverses text) and bytes that
// are not UTF-8 (\xff). The rest, quotes and backslashes included, is kept,
// so Printable of its own result changes nothing. Text from the master
// passes through it before any printer sees it.
func Printable(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || r != ' ' && !strconv.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for len(s) > 0 {
		r, size := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[0])
		case r == ' ' || strconv.IsPrint(r):
			b.WriteString(s[:size])
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		s = s[size:]
	}
	return b.String()
}

// sshRunner runs commands on the master over one long-lived connection.
type sshRunner struct {
	user, addr     string
	knownHosts     string
	insecure       bool
	connectTimeout time.Duration
	commandTimeout time.Duration
	signers        []ssh.Signer
	agentSocket    string
	log            *slog.Logger
	dial           func(ctx context.Context, network, addr string) (net.Conn, error)
	dialAgent      func(socket string) (net.Conn, error)
	mu             sync.Mutex
	client         *ssh.Client
	// received counts the bytes of command output read from the master
	// (stdout of every command and watch), for [Source.Received].
	received atomic.Int64
}

func newSSHRunner(cfg Config, defaultKeys bool) (*sshRunner, error) {
	user, addr, err := parseMaster(cfg.Master)
	if err != nil {
		return nil, err
	}
	r := &sshRunner{
		user:           user,
		addr:           addr,
		knownHosts:     cfg.KnownHosts,
		insecure:       cfg.InsecureIgnoreHostKey,
		connectTimeout: cfg.ConnectTimeout,
		commandTimeout: cfg.CommandTimeout,
		agentSocket:    cfg.AgentSocket,
		log:            cfg.Log,
		dial:           (&net.Dialer{}).DialContext,
		dialAgent:      func(s string) (net.Conn, error) { return net.Dial("unix", s) },
	}
	for _, f := range cfg.KeyFiles {
		s, err := loadKey(f)
		if err != nil {
			if defaultKeys {
				// A default key that is missing is normal; one that
				// cannot be used is worth a line, not a failure.
				if !errors.Is(err, fs.ErrNotExist) {
					r.log.Warn("ssh key skipped", "file", f, "err", err)
				}
				continue
			}
			return nil, err
		}
		r.signers = append(r.signers, s)
	}
	if len(r.signers) == 0 && r.agentSocket == "" {
		return nil, fmt.Errorf("ssh %s: no private key file and no ssh-agent (SSH_AUTH_SOCK)", cfg.Master)
	}
	return r, nil
}

// loadKey reads one unencrypted private key file.
func loadKey(file string) (ssh.Signer, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("ssh key: %w", err)
	}
	s, err := ssh.ParsePrivateKey(b)
	if _, ok := errors.AsType[*ssh.PassphraseMissingError](err); ok {
		return nil, fmt.Errorf("ssh key %s: protected by a passphrase; load it into ssh-agent instead: %w", file, err)
	}
	if err != nil {
		return nil, fmt.Errorf("ssh key %s: %w", file, err)
	}
	return s, nil
}

// parseMaster splits "user@host[:port]" into the user and a dialable
// host:port.
func parseMaster(s string) (user, addr string, err error) {
	bad := func(why string) (string, string, error) {
		return "", "", fmt.Errorf("master %q: %s (want user@host[:port])", s, why)
	}
	at := strings.LastIndexByte(s, '@')
	if at <= 0 {
		return bad("no user")
	}
	user, hp := s[:at], s[at+1:]
	host, port := hp, "22"
	switch {
	case strings.HasPrefix(hp, "[") && strings.HasSuffix(hp, "]"):
		host = hp[1 : len(hp)-1]
	case strings.HasPrefix(hp, "["):
		if host, port, err = net.SplitHostPort(hp); err != nil {
			return bad(err.Error())
		}
	case strings.Count(hp, ":") == 1:
		if host, port, err = net.SplitHostPort(hp); err != nil {
			return bad(err.Error())
		}
	}
	if host == "" {
		return bad("no host")
	}
	if strings.ContainsAny(host, " \t\r\n\x00[]@/") || strings.ContainsAny(user, " \t\r\n\x00") {
		return bad("bad character")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return bad("port " + port + " is not 1-65535")
	}
	return user, net.JoinHostPort(host, port), nil
}

// connect returns the open client, dialing one if there is none.
func (r *sshRunner) connect(ctx context.Context) (c *ssh.Client, fresh bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.client != nil {
		return r.client, false, nil
	}
	c, err = r.dialSSH(ctx)
	if err != nil {
		return nil, false, err
	}
	r.client = c
	go func() {
		// Forget the client as soon as its connection ends, so the
		// next call dials instead of failing.
		_ = c.Wait()
		r.drop(c)
	}()
	return c, true, nil
}

// addrs returns both ends of the open connection: the master's address
// and the local address lbd's SSH leaves from. ok is false when no
// connection is open.
func (r *sshRunner) addrs() (master, local netip.Addr, ok bool) {
	r.mu.Lock()
	c := r.client
	r.mu.Unlock()
	if c == nil {
		return netip.Addr{}, netip.Addr{}, false
	}
	ra, rok := c.RemoteAddr().(*net.TCPAddr)
	la, lok := c.LocalAddr().(*net.TCPAddr)
	if !rok || !lok {
		return netip.Addr{}, netip.Addr{}, false
	}
	return ra.AddrPort().Addr().Unmap(), la.AddrPort().Addr().Unmap(), true
}

// drop closes c and forgets it if it is still the current client.
func (r *sshRunner) drop(c *ssh.Client) {
	r.mu.Lock()
	if r.client == c {
		r.client = nil
	}
	r.mu.Unlock()
	_ = c.Close()
}

// Connect dials the master unless a connection is open.
func (r *sshRunner) Connect(ctx context.Context) error {
	_, _, err := r.connect(ctx)
	return err
}

// Close closes the connection, if any.
func (r *sshRunner) Close() error {
	r.mu.Lock()
	c := r.client
	r.client = nil
	r.mu.Unlock()
	if c == nil {
		return nil
	}
	if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("ssh %s: close: %w", r.addr, err)
	}
	return nil
}

// dialSSH connects, checks the host key and logs in, all within the
// connect timeout.
func (r *sshRunner) dialSSH(ctx context.Context) (*ssh.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, r.connectTimeout)
	defer cancel()

	cfg := &ssh.ClientConfig{User: r.user}
	if r.insecure {
		cfg.HostKeyCallback = func(host string, _ net.Addr, key ssh.PublicKey) error {
			r.log.Warn("ssh host key NOT verified (insecure-ignore-host-key)", "host", host,
				"key", key.Type(), "fingerprint", ssh.FingerprintSHA256(key))
			return nil
		}
	} else {
		cb, algos, err := r.hostKeyCheck()
		if err != nil {
			return nil, err
		}
		cfg.HostKeyCallback = cb
		cfg.HostKeyAlgorithms = algos
	}

	var agentConn net.Conn
	if r.agentSocket != "" {
		c, err := r.dialAgent(r.agentSocket)
		if err != nil {
			r.log.Warn("ssh-agent unreachable; using key files only", "socket", r.agentSocket, "err", err)
		} else {
			agentConn = c
			defer agentConn.Close() // the agent is only needed to log in
		}
	}
	cfg.Auth = []ssh.AuthMethod{ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
		// One method for files and agent: the client tries each method
		// name once, so a second "publickey" method would never run.
		signers := r.signers
		if agentConn != nil {
			as, err := agent.NewClient(agentConn).Signers()
			if err != nil {
				r.log.Warn("ssh-agent keys unavailable", "socket", r.agentSocket, "err", err)
			}
			signers = append(signers[:len(signers):len(signers)], as...)
		}
		return signers, nil
	})}

	conn, err := r.dial(ctx, "tcp", r.addr)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: connect: %w", r.addr, err)
	}
	// The handshake has no context of its own: a deadline bounds it and
	// cancellation closes the connection under it.
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	cc, chans, reqs, err := ssh.NewClientConn(conn, r.addr, cfg)
	if !stop() {
		if err == nil {
			cc.Close()
		}
		return nil, fmt.Errorf("ssh %s: login: %w", r.addr, context.Cause(ctx))
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ssh %s: %w", r.addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	r.log.Debug("ssh connected", "master", r.user+"@"+r.addr)
	return ssh.NewClient(cc, chans, reqs), nil
}

// hostKeyCheck reads known_hosts and returns the callback that verifies the
// master's key, plus the key algorithms known for the master. Asking only
// for those keeps a server that also has a key of another type (not in
// known_hosts) from looking like a changed key.
func (r *sshRunner) hostKeyCheck() (ssh.HostKeyCallback, []string, error) {
	cb, err := knownhosts.New(r.knownHosts)
	if errors.Is(err, fs.ErrNotExist) {
		// No file: every key is unknown, which HostKeyError explains
		// better than "no such file".
		cb = func(string, net.Addr, ssh.PublicKey) error { return &knownhosts.KeyError{} }
	} else if err != nil {
		return nil, nil, fmt.Errorf("ssh %s: known_hosts: %w", r.addr, err)
	}
	check := func(host string, remote net.Addr, key ssh.PublicKey) error {
		err := cb(host, remote, key)
		if err == nil {
			return nil
		}
		e := &HostKeyError{Host: host, KeyType: key.Type(), Fingerprint: ssh.FingerprintSHA256(key), KnownHosts: r.knownHosts, Err: err}
		if ke, ok := errors.AsType[*knownhosts.KeyError](err); ok {
			e.Changed = len(ke.Want) > 0
			for _, k := range ke.Want {
				e.Known = append(e.Known, k.Filename+":"+strconv.Itoa(k.Line))
			}
		} else if re, ok := errors.AsType[*knownhosts.RevokedError](err); ok {
			e.Revoked = true
			e.Known = []string{re.Revoked.Filename + ":" + strconv.Itoa(re.Revoked.Line)}
		}
		return e
	}
	return check, knownAlgorithms(cb, r.addr), nil
}

// knownAlgorithms returns the host key algorithms of the keys known_hosts
// holds for addr, found by asking cb about a key it cannot know; nil (the
// library's default list) when there are none.
func knownAlgorithms(cb ssh.HostKeyCallback, addr string) []string {
	probe, err := ssh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))
	if err != nil {
		return nil
	}
	ke, ok := errors.AsType[*knownhosts.KeyError](cb(addr, &net.TCPAddr{IP: net.IPv4zero}, probe))
	if !ok {
		return nil
	}
	var algos []string
	for _, k := range ke.Want {
		switch t := k.Key.Type(); t {
		case ssh.KeyAlgoRSA:
			algos = append(algos, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		default:
			algos = append(algos, t)
		}
	}
	return algos
}

// run runs cmd on the master within the command timeout and returns its
// stdout. A connection found broken before the command starts is redialed
// once.
func (r *sshRunner) run(ctx context.Context, cmd string) ([]byte, error) {
	return r.runInput(ctx, cmd, nil)
}

// runInput is run with stdin fed to the command (nil: none). Data goes to
// the command's standard input, never into its command line.
func (r *sshRunner) runInput(ctx context.Context, cmd string, stdin []byte) ([]byte, error) {
	stdout := &capBuffer{max: maxStdout}
	if err := r.runOutput(ctx, cmd, stdin, stdout); err != nil {
		return nil, err
	}
	return stdout.Bytes(), nil
}

// runDecode is run with the command's stdout handed to decode as it
// arrives, so that lbd never holds all of it. decode may stop early;
// whatever it leaves is read and dropped, so that the command can finish.
// A failed command (or stdout past maxStdout) is the error; only when the
// command succeeded is decode's error returned.
func (r *sshRunner) runDecode(ctx context.Context, cmd string, decode func(io.Reader) error) error {
	pr, pw := io.Pipe()
	decoded := make(chan error, 1)
	go func() {
		err := decode(pr)
		_, _ = io.Copy(io.Discard, pr) // until the pipe closes
		decoded <- err
	}()
	err := r.runOutput(ctx, cmd, nil, &capPipe{w: pw, max: maxStdout})
	if err != nil {
		pw.CloseWithError(err)
	} else {
		pw.Close()
	}
	derr := <-decoded
	if err != nil {
		return err
	}
	return derr
}

// output is where a command's stdout goes: it takes every write and
// tells whether it had to drop bytes past its cap.
type output interface {
	io.Writer
	overflowed() bool
}

// runOutput runs cmd on the master within the command timeout, stdin fed
// to it (nil: none) and its stdout written to stdout. A failure is a
// *CommandError.
func (r *sshRunner) runOutput(ctx context.Context, cmd string, stdin []byte, stdout output) error {
	ctx, cancel := context.WithTimeout(ctx, r.commandTimeout)
	defer cancel()
	c, sess, err := r.openSession(ctx, cmd)
	if err != nil {
		return err
	}
	defer sess.Close()

	stderr := &capBuffer{max: maxStderr}
	sess.Stdout, sess.Stderr = &countingWriter{w: stdout, n: &r.received}, stderr
	if stdin != nil {
		sess.Stdin = bytes.NewReader(stdin)
	}
	fail := func(status int, err error) error {
		return &CommandError{Host: r.addr, Command: cmd, ExitStatus: status, Stderr: Printable(stderr.String()), Err: err}
	}
	if err := sess.Start(cmd); err != nil {
		return fail(-1, err)
	}
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		// Kill the remote command and give up on it. OpenSSH honours
		// the signal only for sessions of unprivileged users, and it
		// does not confirm the close of a session whose command still
		// runs; so unless the session ends at once, the connection
		// goes too, and no goroutine outlives the call for long. The
		// next call dials again.
		_ = sess.Signal(ssh.SIGKILL)
		_ = sess.Close()
		select {
		case <-done:
		case <-time.After(500 * time.Millisecond):
			r.drop(c)
		}
		return fail(-1, fmt.Errorf("command timed out or was cancelled: %w", context.Cause(ctx)))
	}
	if stdout.overflowed() {
		return fail(-1, fmt.Errorf("stdout exceeds %d bytes", maxStdout))
	}
	if err != nil {
		return fail(r.exitStatus(c, err))
	}
	return nil
}

// openSession returns the connection and a new session on it for cmd,
// redialing once when a connection that was already open turns out to be
// broken. A failure is a *CommandError (or the dial's error).
func (r *sshRunner) openSession(ctx context.Context, cmd string) (*ssh.Client, *ssh.Session, error) {
	c, fresh, err := r.connect(ctx)
	if err != nil {
		return nil, nil, err
	}
	sess, err := newSession(ctx, c)
	if err != nil && !fresh && ctx.Err() == nil {
		r.log.Info("ssh connection lost; redialing", "master", r.user+"@"+r.addr, "err", err)
		r.drop(c)
		if c, _, err = r.connect(ctx); err != nil {
			return nil, nil, err
		}
		sess, err = newSession(ctx, c)
	}
	if err != nil {
		r.drop(c)
		return nil, nil, &CommandError{Host: r.addr, Command: cmd, ExitStatus: -1, Err: fmt.Errorf("open session: %w", err)}
	}
	return c, sess, nil
}

// exitStatus classifies the non-nil error of a finished session: the
// remote exit status (-1 when a signal killed the command) and the error
// to report. An error without an exit status means the connection broke
// under the command; c is dropped so the next call dials afresh.
func (r *sshRunner) exitStatus(c *ssh.Client, err error) (int, error) {
	if ee, ok := errors.AsType[*ssh.ExitError](err); ok {
		if ee.Signal() != "" {
			return -1, fmt.Errorf("killed by signal %s: %w", ee.Signal(), err)
		}
		return ee.ExitStatus(), err
	}
	r.drop(c)
	return -1, err
}

// newSession opens a session on c, giving up (and closing c) when ctx ends
// first: on a dead TCP connection, opening a channel would otherwise wait
// for the kernel's timeout.
func newSession(ctx context.Context, c *ssh.Client) (*ssh.Session, error) {
	type result struct {
		s   *ssh.Session
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := c.NewSession()
		ch <- result{s, err}
	}()
	select {
	case res := <-ch:
		return res.s, res.err
	case <-ctx.Done():
		c.Close()
		if res := <-ch; res.s != nil {
			res.s.Close()
		}
		return nil, context.Cause(ctx)
	}
}

// countingWriter adds the bytes written through it to n.
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return c.w.Write(p)
}

// capBuffer keeps the first max bytes written to it and notes the rest.
// It is deliberately not an io.ReaderFrom (an embedded bytes.Buffer would
// be, and io.Copy would then bypass the cap).
type capBuffer struct {
	buf  bytes.Buffer
	max  int
	over bool
}

// Write keeps what fits and always reports success.
func (b *capBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); len(p) > room {
		b.over = true
		if room > 0 {
			b.buf.Write(p[:room])
		}
		return len(p), nil // keep draining, or the remote side blocks
	}
	return b.buf.Write(p)
}

// Bytes returns the kept bytes.
func (b *capBuffer) Bytes() []byte { return b.buf.Bytes() }

// overflowed reports whether bytes past the cap were dropped.
func (b *capBuffer) overflowed() bool { return b.over }

// capPipe passes the first max bytes written to it on to w and notes the
// rest; past the cap it closes w with an error, so that its reader stops
// on a cut stream instead of taking it for the whole.
type capPipe struct {
	w    *io.PipeWriter
	max  int
	n    int
	over bool
}

// Write passes on what fits and always reports success: the command must
// not stall on a reader that stopped early.
func (c *capPipe) Write(p []byte) (int, error) {
	if c.over {
		return len(p), nil
	}
	if room := c.max - c.n; len(p) > room {
		c.over = true
		c.w.CloseWithError(fmt.Errorf("stdout exceeds %d bytes", c.max))
		return len(p), nil
	}
	c.n += len(p)
	_, _ = c.w.Write(p) // fails only once the pipe is closed
	return len(p), nil
}

// overflowed reports whether bytes past the cap were dropped.
func (c *capPipe) overflowed() bool { return c.over }

// String returns the kept bytes trimmed, marked when some were cut.
func (b *capBuffer) String() string {
	s := strings.TrimSpace(strings.ToValidUTF8(b.buf.String(), "?"))
	if b.over {
		s += " [...]"
	}
	return s
}
