package discovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lbd/lbd/lb"
)

// Defaults for the zero fields of [Config].
const (
	DefaultKubectl        = "kubectl"
	DefaultConnectTimeout = 10 * time.Second
	DefaultCommandTimeout = 60 * time.Second
)

// The remote commands. Only the kubectl prefix comes from the operator;
// nothing from the cluster ever enters a command line. A LIST is read
// with --raw, two of them at once: the API server's JSON as it sends it.
// `kubectl get services,endpointslices -o json` took 10-20 s of kubectl's
// own decoding and printing at 10,000 services x 10 endpoints; --raw
// takes about 0.4 s per list and prints half the bytes (no indentation).
const (
	servicesRaw  = " get --raw /api/v1/services"
	slicesRaw    = " get --raw /apis/discovery.k8s.io/v1/endpointslices"
	endpointsRaw = " get --raw /api/v1/endpoints"
)

// Config says how to reach the Kubernetes master and what to run there.
type Config struct {
	// Master is "user@host[:port]"; the port defaults to 22. An IPv6
	// address is written in brackets, "root@[2001:db8::1]:22".
	Master string
	// KeyFiles are the private keys to offer. nil means those of
	// ~/.ssh/id_ed25519, ~/.ssh/id_ecdsa and ~/.ssh/id_rsa that exist; an
	// empty non-nil slice means no key files (agent only). A key file
	// that is protected by a passphrase must be loaded into ssh-agent
	// instead.
	KeyFiles []string
	// AgentSocket is the ssh-agent socket; empty means $SSH_AUTH_SOCK.
	// The agent's keys are offered after the key files.
	AgentSocket string
	// NoAgent turns the agent off even when $SSH_AUTH_SOCK is set.
	NoAgent bool
	// KnownHosts is the known_hosts file that the master's host key is
	// checked against; empty means ~/.ssh/known_hosts. It is read at each
	// connect, so a key added while lbd runs is seen at the next one.
	KnownHosts string
	// InsecureIgnoreHostKey accepts any host key, logging a warning with
	// its fingerprint on every connect. For labs only.
	InsecureIgnoreHostKey bool
	// ConnectTimeout bounds the TCP connect, SSH handshake and login;
	// zero means DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// CommandTimeout bounds one run of kubectl; zero means
	// DefaultCommandTimeout.
	CommandTimeout time.Duration
	// Kubectl is the remote command prefix, e.g. "kubectl" or
	// "sudo k3s kubectl --kubeconfig /etc/k.conf"; empty means
	// DefaultKubectl. It is passed to the remote shell as written.
	Kubectl string
	// Log receives connection events; nil means slog.Default().
	Log *slog.Logger
}

// Source discovers services by running kubectl on the master over SSH. It
// keeps one connection open across calls; it is safe for concurrent use.
// It satisfies reconcile.Source.
type Source struct {
	kubectl string
	// requestTimeout is kubectl's --request-timeout flag, with its leading
	// space; "" in tests that build a Source by hand.
	requestTimeout string
	master         string
	log            *slog.Logger
	// run runs one remote command and returns its stdout; a failing
	// command is a *CommandError. Tests replace it.
	run func(ctx context.Context, cmd string) ([]byte, error)
	// runInput is run with data on the command's stdin.
	runInput func(ctx context.Context, cmd string, stdin []byte) ([]byte, error)
	// runDecode is run with the command's stdout handed to decode as it
	// arrives (see sshRunner.runDecode). nil: run, then decode the bytes
	// (tests that replace run).
	runDecode func(ctx context.Context, cmd string, decode func(io.Reader) error) error
	// addrs returns both ends of the open connection.
	addrs func() (master, local netip.Addr, ok bool)
	// connect makes sure the connection behind run is up.
	connect func(ctx context.Context) error
	// close releases the connection behind run.
	close func() error
	// stream runs a long-lived remote command on the same connection and
	// calls line for each line it prints (see watch.go). Tests replace it.
	stream func(ctx context.Context, cmd string, keepAlive time.Duration, line func([]byte)) error
	// streamEvents is stream calling event with each JSON object printed
	// (see cached.go). Tests replace it.
	streamEvents func(ctx context.Context, cmd string, keepAlive time.Duration, event func([]byte) error) error
	// received returns the bytes of command output read so far.
	received func() int64

	mu sync.Mutex
	// legacy is set once the cluster turned out to have no EndpointSlice
	// API; it holds for the life of the Source.
	legacy bool
	// lastParse is the parse time of the last Discover.
	lastParse time.Duration
}

// New checks cfg, loads the key files and returns a Source. It does not
// connect; the first Discover or Connect does.
func New(cfg Config) (*Source, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Kubectl == "" {
		cfg.Kubectl = DefaultKubectl
	}
	if err := checkKubectl(cfg.Kubectl); err != nil {
		return nil, err
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = DefaultCommandTimeout
	}
	home, herr := os.UserHomeDir()
	if cfg.KnownHosts == "" && !cfg.InsecureIgnoreHostKey {
		if herr != nil {
			return nil, fmt.Errorf("known_hosts: %w", herr)
		}
		cfg.KnownHosts = filepath.Join(home, ".ssh", "known_hosts")
	}
	defaultKeys := cfg.KeyFiles == nil
	if defaultKeys && herr == nil {
		for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			cfg.KeyFiles = append(cfg.KeyFiles, filepath.Join(home, ".ssh", n))
		}
	}
	if cfg.AgentSocket == "" && !cfg.NoAgent {
		cfg.AgentSocket = os.Getenv("SSH_AUTH_SOCK")
	}
	if cfg.NoAgent {
		cfg.AgentSocket = ""
	}
	r, err := newSSHRunner(cfg, defaultKeys)
	if err != nil {
		return nil, err
	}
	return &Source{
		kubectl:        cfg.Kubectl,
		requestTimeout: requestTimeout(cfg.CommandTimeout),
		master:         cfg.Master,
		log:            cfg.Log,
		run:            r.run,
		runInput:       r.runInput,
		runDecode:      r.runDecode,
		addrs:          r.addrs,
		connect:        r.Connect,
		close:          r.Close,
		stream:         r.stream,
		streamEvents:   r.streamEvents,
		received:       r.received.Load,
	}, nil
}

// requestTimeout is the --request-timeout flag for a kubectl run bounded by
// commandTimeout: nine tenths of it, in whole seconds, at least one. lbd
// cannot count on sshd to kill a command whose session it closed, so
// kubectl ends by itself shortly before lbd gives up on it, and its own
// error reaches lbd's log first.
func requestTimeout(commandTimeout time.Duration) string {
	secs := max(1, int(commandTimeout.Seconds()*0.9))
	return " --request-timeout=" + strconv.Itoa(secs) + "s"
}

// checkKubectl refuses a prefix that could not be one remote command line.
func checkKubectl(k string) error {
	if strings.TrimSpace(k) == "" {
		return errors.New("kubectl command: empty")
	}
	if strings.ContainsAny(k, "\n\r\x00") {
		return fmt.Errorf("kubectl command %q: contains a newline or NUL", k)
	}
	return nil
}

// Discover runs kubectl on the master and parses its output (see [Parse]).
// Each list is decoded as it arrives, item by item, so that its bytes are
// never all held. The first call that finds no EndpointSlice API on the
// cluster switches this Source to Endpoints for good.
func (s *Source) Discover(ctx context.Context) ([]lb.Service, []*lb.InvalidServiceError, error) {
	lists, err := s.fetch(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("discover services on %s: %w", s.master, err)
	}
	start := time.Now()
	svcs, invalid, err := assemble(lists)
	s.mu.Lock()
	s.lastParse = time.Since(start)
	s.mu.Unlock()
	if err != nil {
		return nil, nil, fmt.Errorf("discover services on %s: %w", s.master, err)
	}
	return svcs, invalid, nil
}

// LastParse returns how long the last Discover spent building services
// from kubectl's decoded output. The JSON is decoded while it arrives, so
// its decoding counts in the rest, with SSH and kubectl on the master.
func (s *Source) LastParse() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastParse
}

// fetch returns the two lists decoded, services and then EndpointSlices
// (or Endpoints once the cluster is known to lack slices), read at once
// over two sessions of the connection. Either failing fails the fetch; a
// list that is not one fails it too (see [decodeStream]).
func (s *Source) fetch(ctx context.Context) ([]decodedList, error) {
	svcs, eps, err := fetchBoth(ctx, s, s.list)
	if err != nil {
		return nil, err
	}
	return []decodedList{svcs, eps}, nil
}

// fetchRaw is fetch returning kubectl's bytes, for the cache.
func (s *Source) fetchRaw(ctx context.Context) ([][]byte, error) {
	svcs, eps, err := fetchBoth(ctx, s, s.run)
	if err != nil {
		return nil, err
	}
	return [][]byte{svcs, eps}, nil
}

// fetchBoth runs get for the services and, at once, for the
// EndpointSlices, falling back to Endpoints for good when the cluster has
// no EndpointSlice API. Either failing fails both.
func fetchBoth[T any](ctx context.Context, s *Source, get func(context.Context, string) (T, error)) (svcs, eps T, _ error) {
	legacy := s.isLegacy()
	second := slicesRaw
	if legacy {
		second = endpointsRaw
	}
	var svcErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		svcs, svcErr = get(ctx, s.kubectl+servicesRaw+s.requestTimeout)
	}()
	eps, epErr := get(ctx, s.kubectl+second+s.requestTimeout)
	if !legacy && s.fallBack(epErr) {
		eps, epErr = get(ctx, s.kubectl+endpointsRaw+s.requestTimeout)
	}
	<-done
	var zero T
	if svcErr != nil {
		return zero, zero, svcErr
	}
	if epErr != nil {
		return zero, zero, epErr
	}
	return svcs, eps, nil
}

// list runs one LIST and decodes what it prints. The error is the
// command's (a *CommandError) or the decoding's.
func (s *Source) list(ctx context.Context, cmd string) (decodedList, error) {
	if s.runDecode == nil {
		out, err := s.run(ctx, cmd)
		if err != nil {
			return decodedList{}, err
		}
		d := decodeList(out)
		return d, d.err
	}
	var d decodedList
	err := s.runDecode(ctx, cmd, func(r io.Reader) error {
		d = decodeStream(r)
		return d.err
	})
	return d, err
}

// isLegacy reports whether the cluster turned out to have no EndpointSlice
// API, so that Endpoints are read instead.
func (s *Source) isLegacy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.legacy
}

// fallBack reports whether err says the cluster has no EndpointSlice API;
// if so the Source reads Endpoints from now on, for Discover and Watch.
func (s *Source) fallBack(err error) bool {
	if !noEndpointSlices(err) {
		return false
	}
	s.log.Warn("the cluster has no EndpointSlice API; reading Endpoints from now on", "master", s.master, "err", err)
	s.mu.Lock()
	s.legacy = true
	s.mu.Unlock()
	return true
}

// noEndpointSlices reports whether err is kubectl saying that the server
// does not serve the EndpointSlice API: for --raw, `Error from server
// (NotFound): the server could not find the requested resource` from the
// slices list; for get, `error: the server doesn't have a resource type
// "endpointslices"`.
func noEndpointSlices(err error) bool {
	ce, ok := errors.AsType[*CommandError](err)
	if !ok || ce.ExitStatus <= 0 {
		return false
	}
	if strings.Contains(ce.Command, slicesRaw) {
		return strings.Contains(ce.Stderr, "(NotFound)") &&
			strings.Contains(ce.Stderr, "could not find the requested resource")
	}
	return strings.Contains(ce.Stderr, "doesn't have a resource type") &&
		strings.Contains(ce.Stderr, "endpointslices")
}

// Connect makes sure the connection to the master is up, dialing it if
// needed, without running anything. `lbd check` uses it to tell SSH
// trouble from kubectl trouble.
func (s *Source) Connect(ctx context.Context) error { return s.connect(ctx) }

// ConnAddrs returns both ends of the open SSH connection: the master's
// address and the local address lbd's SSH leaves from. ok is false while
// no connection is open (before the first Discover, or after it broke).
// lbd never serves either address.
func (s *Source) ConnAddrs() (master, local netip.Addr, ok bool) {
	if s.addrs == nil {
		return netip.Addr{}, netip.Addr{}, false
	}
	return s.addrs()
}

// Received returns how many bytes of command output (kubectl's stdout,
// watches included) this Source has read from the master since New: the
// cost of discovery on the wire.
func (s *Source) Received() int64 {
	if s.received == nil {
		return 0
	}
	return s.received()
}

// Close closes the connection to the master. A later Discover dials again.
func (s *Source) Close() error { return s.close() }
