package discovery

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/lbd/lbd/internal/testkit"

	"github.com/lbd/lbd/lb"
)

const sshdPath = "/usr/sbin/sshd"

// requireRoot is the one lab gate, testkit.RequireRoot: this test runs a
// real sshd.
func requireRoot(t *testing.T) {
	t.Helper()
	testkit.RequireRoot(t)
}

// testSSHD is a real OpenSSH server on loopback (127.0.0.1 and ::1, a free
// port), with its own host keys and one authorized client key, run by the
// test and killed at its end.
type testSSHD struct {
	dir       string
	port      int
	cmd       *exec.Cmd
	hostED    ssh.PublicKey
	hostECDSA ssh.PublicKey
	clientKey string // private key file
	client    ssh.Signer
	log       *lockedBuffer
	// home is root's home, under an empty tmpfs in sshd's mount
	// namespace.
	home string
}

func writeKey(t *testing.T, file string, priv any) ssh.Signer {
	t.Helper()
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newED25519(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func startSSHD(t *testing.T) *testSSHD {
	t.Helper()
	requireRoot(t)
	if _, err := os.Stat(sshdPath); err != nil {
		t.Skipf("SKIPPED: %s not installed (apt-get install openssh-server): %v", sshdPath, err)
	}
	d := &testSSHD{dir: t.TempDir(), log: &lockedBuffer{}}
	d.hostED = writeKey(t, filepath.Join(d.dir, "host_ed25519"), newED25519(t)).PublicKey()
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d.hostECDSA = writeKey(t, filepath.Join(d.dir, "host_ecdsa"), ek).PublicKey()
	d.clientKey = filepath.Join(d.dir, "id_ed25519")
	d.client = writeKey(t, d.clientKey, newED25519(t))
	if err := os.WriteFile(filepath.Join(d.dir, "authorized_keys"), ssh.MarshalAuthorizedKey(d.client.PublicKey()), 0o600); err != nil {
		t.Fatal(err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	listen := "ListenAddress 127.0.0.1\n"
	if hasIPv6Loopback() {
		listen += "ListenAddress ::1\n"
	}
	conf := fmt.Sprintf(`Port %d
%sHostKey %[3]s/host_ed25519
HostKey %[3]s/host_ecdsa
PidFile %[3]s/sshd.pid
AuthorizedKeysFile %[3]s/authorized_keys
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM yes
LogLevel VERBOSE
`, d.port, listen, d.dir)
	confFile := filepath.Join(d.dir, "sshd_config")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil { // privilege separation directory
		t.Fatal(err)
	}
	// Sessions run root's login shell, which reads root's dotfiles: the
	// host's, with whatever they do (a pyenv rehash waiting on the lock
	// that a session killed by a test left behind made every later
	// session hang for a minute). sshd runs in a mount namespace of its
	// own (unshare execs, so the pid stays sshd's) with an empty tmpfs
	// over root's home, which the host never sees.
	home := rootHome(t)
	script := `mount -t tmpfs -o mode=0700,size=16m lbd-test-home "$1" && exec "$2" -D -e -f "$3"`
	d.cmd = exec.Command("unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script, "sh", home, sshdPath, confFile)
	d.home = home
	d.cmd.Stderr = d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		_ = d.cmd.Wait()
		for _, pid := range d.children() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if t.Failed() {
			t.Logf("sshd log:\n%s", d.log)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", d.addr(), time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd did not listen on %s: %v\n%s", d.addr(), err, d.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return d
}

// rootHome returns root's home directory from the user database, as
// sshd finds it.
func rootHome(t *testing.T) string {
	t.Helper()
	u, err := user.LookupId("0")
	if err != nil {
		t.Fatalf("root's home: %v", err)
	}
	if !filepath.IsAbs(u.HomeDir) || u.HomeDir == "/" {
		t.Fatalf("root's home %q: want an absolute path below /", u.HomeDir)
	}
	return u.HomeDir
}

func hasIPv6Loopback() bool {
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func (d *testSSHD) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(d.port)) }

// children returns the pids of this sshd's per-connection processes.
func (d *testSSHD) children() []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// The fields after the command name, which is in parentheses:
		// state, ppid, ...
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(d.cmd.Process.Pid) {
			out = append(out, pid)
		}
	}
	return out
}

// knownHosts writes a known_hosts file holding keys for this sshd.
func (d *testSSHD) knownHosts(t *testing.T, keys ...ssh.PublicKey) string {
	t.Helper()
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(knownhosts.Line([]string{knownhosts.Normalize(d.addr())}, k) + "\n")
	}
	f := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(f, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// script writes an executable "remote kubectl" and returns its path. It
// logs "$SSH_CONNECTION|$*" of each call to calls.log beside it.
// rawLists is a kubectl script body that answers the --raw LISTs of
// Discover from the typed fixtures in testdata, and runs other for any
// other command ("" fails it).
func rawLists(t *testing.T, other string) string {
	td := mustAbs(t, "testdata")
	if other == "" {
		other = `echo "unexpected $*" >&2; exit 1`
	}
	return fmt.Sprintf(`case "$*" in
"get --raw /api/v1/services "*) cat %s;;
"get --raw /apis/discovery.k8s.io/v1/endpointslices "*) cat %s;;
"get --raw /api/v1/endpoints "*) cat %s;;
*) %s;;
esac`, filepath.Join(td, "raw-services.json"), filepath.Join(td, "raw-endpointslices.json"), filepath.Join(td, "raw-endpoints.json"), other)
}

func script(t *testing.T, body string) (path, calls string) {
	t.Helper()
	dir := t.TempDir()
	path = filepath.Join(dir, "kubectl")
	calls = filepath.Join(dir, "calls.log")
	s := "#!/bin/bash\necho \"$SSH_CONNECTION|$*\" >>" + calls + "\n" + body + "\n"
	if err := os.WriteFile(path, []byte(s), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, calls
}

// callLog returns the logged calls, one "connection|args" string each.
func callLog(t *testing.T, calls string) []string {
	t.Helper()
	b, err := os.ReadFile(calls)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newTestSource returns a Source for d with the client key, no agent, and
// logs captured into the returned buffer.
func newTestSource(t *testing.T, d *testSSHD, edit func(*Config)) (*Source, *lockedBuffer) {
	t.Helper()
	logs := &lockedBuffer{}
	cfg := Config{
		Master:         "root@" + d.addr(),
		KeyFiles:       []string{d.clientKey},
		NoAgent:        true,
		KnownHosts:     d.knownHosts(t, d.hostED),
		ConnectTimeout: 5 * time.Second,
		CommandTimeout: 20 * time.Second,
		Log:            slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, logs
}

// connOf returns the SSH_CONNECTION part of a logged call.
func connOf(call string) string { c, _, _ := strings.Cut(call, "|"); return c }

func TestSSH(t *testing.T) {
	d := startSSHD(t)
	ctx := context.Background()
	want, _, err := Parse(readFixture(t, sliceFixture))
	if err != nil {
		t.Fatal(err)
	}
	catSlices := rawLists(t, "")
	diffServices := func(t *testing.T, got []lb.Service) {
		t.Helper()
		if diff := cmp.Diff(want, got, addrComparer); diff != "" {
			t.Errorf("Discover (-want +got):\n%s", diff)
		}
	}

	t.Run("success reuses one connection", func(t *testing.T) {
		kubectl, calls := script(t, catSlices)
		s, _ := newTestSource(t, d, func(c *Config) { c.Kubectl = kubectl })
		for range 2 {
			got, invalid, err := s.Discover(ctx)
			if err != nil || len(invalid) != 0 {
				t.Fatalf("Discover: %v, rejected %v", err, invalid)
			}
			diffServices(t, got)
		}
		log := callLog(t, calls)
		if len(log) != 4 || connOf(log[0]) == "" || connOf(log[1]) != connOf(log[0]) || connOf(log[2]) != connOf(log[0]) || connOf(log[3]) != connOf(log[0]) {
			t.Errorf("calls %q: want four over one connection", log)
		}
		var args []string
		for _, c := range log[:2] {
			_, a, _ := strings.Cut(c, "|")
			args = append(args, a)
		}
		slices.Sort(args)
		want := []string{"get --raw /api/v1/services --request-timeout=18s", "get --raw /apis/discovery.k8s.io/v1/endpointslices --request-timeout=18s"}
		if diff := cmp.Diff(want, args); diff != "" {
			t.Errorf("remote commands (-want +got):\n%s", diff)
		}
	})

	t.Run("redials once when the connection breaks", func(t *testing.T) {
		kubectl, calls := script(t, catSlices)
		s, logs := newTestSource(t, d, func(c *Config) { c.Kubectl = kubectl })
		if _, _, err := s.Discover(ctx); err != nil {
			t.Fatal(err)
		}
		kids := d.children()
		if len(kids) == 0 {
			t.Fatal("no sshd connection process to kill")
		}
		for _, pid := range kids {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
		got, _, err := s.Discover(ctx)
		if err != nil {
			t.Fatalf("Discover after the connection broke: %v\nlogs:\n%s", err, logs)
		}
		diffServices(t, got)
		log := callLog(t, calls)
		if len(log) != 4 || connOf(log[0]) != connOf(log[1]) || connOf(log[2]) != connOf(log[3]) || connOf(log[0]) == connOf(log[2]) {
			t.Errorf("calls %q: want two and two over two connections", log)
		}
	})

	t.Run("Close then Discover dials again", func(t *testing.T) {
		kubectl, calls := script(t, catSlices)
		s, _ := newTestSource(t, d, func(c *Config) { c.Kubectl = kubectl })
		if err := s.Connect(ctx); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Discover(ctx); err != nil {
			t.Fatal(err)
		}
		if n := len(callLog(t, calls)); n != 2 {
			t.Errorf("%d calls, want 2 (the two lists)", n)
		}
	})

	t.Run("known_hosts holds only the ECDSA key", func(t *testing.T) {
		// The server has an Ed25519 and an ECDSA key. Asking only for
		// the algorithms known_hosts holds keeps the other key from
		// looking like a changed one: here only ECDSA is known; in
		// the other subtests only Ed25519, which the client would not
		// pick first on its own.
		kubectl, _ := script(t, catSlices)
		s, _ := newTestSource(t, d, func(c *Config) {
			c.Kubectl = kubectl
			c.KnownHosts = d.knownHosts(t, d.hostECDSA)
		})
		if _, _, err := s.Discover(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("IPv6 master", func(t *testing.T) {
		if !hasIPv6Loopback() {
			t.Skip("SKIPPED: no ::1 on this machine")
		}
		kubectl, _ := script(t, catSlices)
		kh := filepath.Join(t.TempDir(), "known_hosts")
		addr6 := net.JoinHostPort("::1", strconv.Itoa(d.port))
		if err := os.WriteFile(kh, []byte(knownhosts.Line([]string{knownhosts.Normalize(addr6)}, d.hostED)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		s, _ := newTestSource(t, d, func(c *Config) {
			c.Kubectl = kubectl
			c.Master = "root@" + addr6
			c.KnownHosts = kh
		})
		got, _, err := s.Discover(ctx)
		if err != nil {
			t.Fatal(err)
		}
		diffServices(t, got)
	})

	t.Run("key from ssh-agent", func(t *testing.T) {
		keyring := agent.NewKeyring()
		priv, err := ssh.ParseRawPrivateKey(mustRead(t, d.clientKey))
		if err != nil {
			t.Fatal(err)
		}
		if err := keyring.Add(agent.AddedKey{PrivateKey: priv}); err != nil {
			t.Fatal(err)
		}
		sock := filepath.Join(t.TempDir(), "agent.sock")
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); _ = agent.ServeAgent(keyring, c) }()
			}
		}()
		kubectl, _ := script(t, catSlices)
		s, _ := newTestSource(t, d, func(c *Config) {
			c.Kubectl = kubectl
			c.KeyFiles = []string{}
			c.NoAgent = false
			c.AgentSocket = sock
		})
		if _, _, err := s.Discover(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("key not authorized", func(t *testing.T) {
		other := filepath.Join(t.TempDir(), "id_other")
		writeKey(t, other, newED25519(t))
		s, _ := newTestSource(t, d, func(c *Config) { c.KeyFiles = []string{other} })
		_, _, err := s.Discover(ctx)
		if err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
			t.Fatalf("Discover error %v, want an authentication failure", err)
		}
	})

	hostKeyTests := []struct {
		name        string
		knownHosts  func(t *testing.T) string
		wantChanged bool
		wantText    string
	}{
		{"unknown host key: no known_hosts file", func(t *testing.T) string { return filepath.Join(t.TempDir(), "absent") }, false, "is unknown"},
		{"unknown host key: empty known_hosts", func(t *testing.T) string { return d.knownHosts(t) }, false, "is unknown"},
		{"changed host key", func(t *testing.T) string {
			other := newED25519(t).Public().(ed25519.PublicKey)
			pk, err := ssh.NewPublicKey(other)
			if err != nil {
				t.Fatal(err)
			}
			return d.knownHosts(t, pk)
		}, true, "has CHANGED"},
	}
	for _, tt := range hostKeyTests {
		t.Run(tt.name, func(t *testing.T) {
			kubectl, calls := script(t, catSlices)
			s, _ := newTestSource(t, d, func(c *Config) {
				c.Kubectl = kubectl
				c.KnownHosts = tt.knownHosts(t)
			})
			_, _, err := s.Discover(ctx)
			e, ok := errors.AsType[*HostKeyError](err)
			if !ok {
				t.Fatalf("Discover error %v, want a *HostKeyError", err)
			}
			served := map[string]bool{ssh.FingerprintSHA256(d.hostED): true, ssh.FingerprintSHA256(d.hostECDSA): true}
			if !served[e.Fingerprint] {
				t.Errorf("fingerprint %s is not one of the server's keys %v", e.Fingerprint, served)
			}
			if e.Changed != tt.wantChanged {
				t.Errorf("Changed = %v, want %v", e.Changed, tt.wantChanged)
			}
			for _, s := range []string{d.addr(), e.Fingerprint, tt.wantText} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			if _, ok := errors.AsType[*knownhosts.KeyError](err); !ok {
				t.Errorf("error %v does not wrap the *knownhosts.KeyError", err)
			}
			if n := len(callLog(t, calls)); n != 0 {
				t.Errorf("kubectl ran %d times despite the host key", n)
			}
		})
	}

	t.Run("insecure ignores the host key and warns", func(t *testing.T) {
		kubectl, _ := script(t, catSlices)
		s, logs := newTestSource(t, d, func(c *Config) {
			c.Kubectl = kubectl
			c.KnownHosts = filepath.Join(t.TempDir(), "absent")
			c.InsecureIgnoreHostKey = true
		})
		if _, _, err := s.Discover(ctx); err != nil {
			t.Fatal(err)
		}
		l := logs.String()
		if !strings.Contains(l, "level=WARN") || !strings.Contains(l, "NOT verified") ||
			!(strings.Contains(l, ssh.FingerprintSHA256(d.hostED)) || strings.Contains(l, ssh.FingerprintSHA256(d.hostECDSA))) {
			t.Errorf("logs lack the warning with the fingerprint:\n%s", l)
		}
	})

	t.Run("remote failure carries exit status and stderr", func(t *testing.T) {
		kubectl, _ := script(t, `echo "error: You must be logged in to the server (Unauthorized)" >&2; exit 3`)
		s, _ := newTestSource(t, d, func(c *Config) { c.Kubectl = kubectl })
		_, _, err := s.Discover(ctx)
		e, ok := errors.AsType[*CommandError](err)
		if !ok {
			t.Fatalf("Discover error %v, want a *CommandError", err)
		}
		if e.ExitStatus != 3 || e.Stderr != "error: You must be logged in to the server (Unauthorized)" {
			t.Errorf("exit %d, stderr %q", e.ExitStatus, e.Stderr)
		}
		for _, s := range []string{"exit status 3", "(Unauthorized)"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not contain %q", err, s)
			}
		}
	})

	t.Run("stderr control characters are escaped", func(t *testing.T) {
		kubectl, _ := script(t, `printf 'error: x\n\033[2J\033]0;pwned\007last sync: ok\n' >&2; exit 1`)
		s, _ := newTestSource(t, d, func(c *Config) { c.Kubectl = kubectl })
		_, _, err := s.Discover(ctx)
		e, ok := errors.AsType[*CommandError](err)
		if !ok || e.ExitStatus != 1 {
			t.Fatalf("Discover error %v, want exit status 1", err)
		}
		if want := `error: x\n\x1b[2J\x1b]0;pwned\alast sync: ok`; e.Stderr != want {
			t.Errorf("stderr %q, want %q", e.Stderr, want)
		}
		if hasControl(err.Error()) {
			t.Errorf("error %q holds control characters", err)
		}
	})

	t.Run("stderr is capped", func(t *testing.T) {
		kubectl, _ := script(t, `head -c 100000 /dev/zero | tr '\0' x >&2; exit 1`)
		s, _ := newTestSource(t, d, func(c *Config) { c.Kubectl = kubectl })
		_, _, err := s.Discover(ctx)
		e, ok := errors.AsType[*CommandError](err)
		if !ok || e.ExitStatus != 1 {
			t.Fatalf("Discover error %v, want exit status 1", err)
		}
		if len(e.Stderr) > maxStderr+10 || !strings.HasSuffix(e.Stderr, "[...]") {
			t.Errorf("stderr of %d bytes, want at most about %d, marked as cut", len(e.Stderr), maxStderr)
		}
	})

	t.Run("command timeout", func(t *testing.T) {
		marker := "lbd-disc-sleep-" + strconv.Itoa(os.Getpid())
		kubectl, calls := script(t, "exec -a "+marker+" sleep 30")
		s, _ := newTestSource(t, d, func(c *Config) {
			c.Kubectl = kubectl
			c.CommandTimeout = time.Second
		})
		start := time.Now()
		_, _, err := s.Discover(ctx)
		took := time.Since(start)
		e, ok := errors.AsType[*CommandError](err)
		if !ok || !errors.Is(err, context.DeadlineExceeded) || e.ExitStatus != -1 {
			t.Fatalf("Discover error %v, want a *CommandError wrapping the deadline", err)
		}
		if took > 5*time.Second {
			t.Errorf("Discover took %v with a 1s command timeout", took)
		}
		t.Logf("timed out after %v", took)
		// OpenSSH kills the remote command on the signal only for
		// unprivileged users; this test logs in as root, so the
		// command may outlive the session. It is ours: end it.
		for _, pid := range remotePIDs(marker) {
			t.Logf("remote %s (pid %d) outlived the session; killing it", marker, pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		// And the Source still works.
		if err := os.WriteFile(kubectl, []byte("#!/bin/bash\necho \"$SSH_CONNECTION|$*\" >>"+calls+"\n"+catSlices+"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Discover(ctx); err != nil {
			t.Errorf("Discover after a timeout: %v", err)
		}
	})

	t.Run("falls back to Endpoints when the cluster has no EndpointSlices", func(t *testing.T) {
		// The slices list fails with the words kubectl --raw prints for
		// an API the apiserver does not serve (as the lab's kubectl
		// v1.32 says for /apis/nosuch.k8s.io/v1/things); the Endpoints
		// list answers.
		kubectl, calls := script(t, `case "$*" in
"get --raw /apis/discovery.k8s.io/v1/endpointslices "*) echo "Error from server (NotFound): the server could not find the requested resource" >&2; exit 1;;
esac
`+rawLists(t, ""))
		s, logs := newTestSource(t, d, func(c *Config) { c.Kubectl = kubectl })
		legacyWant, _, err := Parse(readFixture(t, legacyFixture))
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			got, _, err := s.Discover(ctx)
			if err != nil {
				t.Fatalf("Discover: %v", err)
			}
			if diff := cmp.Diff(legacyWant, got, addrComparer); diff != "" {
				t.Errorf("Discover (-want +got):\n%s", diff)
			}
		}
		var args []string
		for _, c := range callLog(t, calls) {
			_, a, _ := strings.Cut(c, "|")
			args = append(args, a)
		}
		wantArgs := []string{
			"get --raw /api/v1/endpoints --request-timeout=18s",
			"get --raw /api/v1/endpoints --request-timeout=18s",
			"get --raw /api/v1/services --request-timeout=18s",
			"get --raw /api/v1/services --request-timeout=18s",
			"get --raw /apis/discovery.k8s.io/v1/endpointslices --request-timeout=18s",
		}
		slices.Sort(args)
		if diff := cmp.Diff(wantArgs, args); diff != "" {
			t.Errorf("remote commands (-want +got):\n%s", diff)
		}
		if !strings.Contains(logs.String(), "no EndpointSlice API") {
			t.Errorf("the fallback was not logged:\n%s", logs)
		}
	})
}

// TestConnectTimeout: a server that accepts TCP but never speaks SSH.
func TestConnectTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	dir := t.TempDir()
	key := filepath.Join(dir, "id")
	writeKey(t, key, newED25519(t))
	s, err := New(Config{
		Master:         "root@" + l.Addr().String(),
		KeyFiles:       []string{key},
		NoAgent:        true,
		KnownHosts:     filepath.Join(dir, "known_hosts"),
		ConnectTimeout: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, _, err = s.Discover(context.Background())
	if err == nil {
		t.Fatal("Discover succeeded against a silent server")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Discover took %v with a 300ms connect timeout", took)
	}
	if !strings.Contains(err.Error(), l.Addr().String()) {
		t.Errorf("error %q does not name the master", err)
	}
}

// remotePIDs returns the processes whose command line starts with marker.
func remotePIDs(marker string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.HasPrefix(b, []byte(marker+"\x00")) {
			out = append(out, pid)
		}
	}
	return out
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustRead(t *testing.T, f string) []byte {
	t.Helper()
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSSHDHomeIsolated: the test sshd sees an empty tmpfs over root's
// home, and the host does not, so no dotfile of the host runs in a
// session.
func TestSSHDHomeIsolated(t *testing.T) {
	d := startSSHD(t)
	mounted := func(mountinfo string) bool {
		for _, l := range strings.Split(mountinfo, "\n") {
			// "id parent maj:min root mountpoint opts ... - fstype source ..."
			f := strings.Fields(l)
			if len(f) > 4 && f[4] == d.home && strings.Contains(l, " - tmpfs lbd-test-home ") {
				return true
			}
		}
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", d.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !mounted(string(b)) {
		t.Errorf("sshd (pid %d) has no tmpfs over %s:\n%s", d.cmd.Process.Pid, d.home, b)
	}
	host, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if mounted(string(host)) {
		t.Errorf("the tmpfs over %s reached the host's mount namespace", d.home)
	}
}
