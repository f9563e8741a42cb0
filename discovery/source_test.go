package discovery

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"
)

const (
	svcCmd    = "kubectl" + servicesRaw
	slicesCmd = "kubectl" + slicesRaw
	legacyCmd = "kubectl" + endpointsRaw
)

// reply is what the fake remote answers to one command.
type reply struct {
	out []byte
	err error
}

// fakeSource returns a Source whose remote end answers from replies by
// command, and the commands it ran, sorted (the two lists are read at once).
func fakeSource(t *testing.T, replies map[string]reply) (*Source, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var ran []string
	s := &Source{
		kubectl: "kubectl",
		master:  "root@master",
		log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		run: func(_ context.Context, cmd string) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			ran = append(ran, cmd)
			r, ok := replies[cmd]
			if !ok {
				t.Errorf("unexpected command %q", cmd)
				return nil, errors.New("unexpected command")
			}
			return r.out, r.err
		},
	}
	return s, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Sorted(slices.Values(ran))
	}
}

// typedList returns the items of kind in kubectl's List data as the API
// server's typed list (<kind>List), as `kubectl get --raw` prints it.
func typedList(t *testing.T, data []byte, kind string) []byte {
	t.Helper()
	var l kubeList
	if err := json.Unmarshal(data, &l); err != nil {
		t.Fatal(err)
	}
	items := []json.RawMessage{}
	for _, it := range l.Items {
		var h header
		if err := json.Unmarshal(it, &h); err != nil {
			t.Fatal(err)
		}
		if h.Kind == kind {
			items = append(items, it)
		}
	}
	out, err := json.Marshal(map[string]any{"kind": kind + "List", "apiVersion": "v1", "items": items})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDiscoverFallback(t *testing.T) {
	// kubectl's words for --raw of an API the server does not serve.
	const notFound = "Error from server (NotFound): the server could not find the requested resource"
	noSlices := &CommandError{Command: slicesCmd, ExitStatus: 1, Stderr: notFound}
	unauthorized := &CommandError{Command: slicesCmd, ExitStatus: 1, Stderr: "error: You must be logged in to the server (Unauthorized)"}
	timedOut := &CommandError{Command: slicesCmd, ExitStatus: -1, Stderr: notFound, Err: context.DeadlineExceeded}
	svcNotFound := &CommandError{Command: svcCmd, ExitStatus: 1, Stderr: notFound}
	svcs := reply{out: typedList(t, readFixture(t, sliceFixture), "Service")}
	sl := reply{out: typedList(t, readFixture(t, sliceFixture), "EndpointSlice")}
	legacy := reply{out: typedList(t, readFixture(t, legacyFixture), "Endpoints")}

	tests := []struct {
		name    string
		replies map[string]reply
		// calls is how many times Discover is called.
		calls   int
		wantRan []string
		// wantErr is nil when every call must succeed, else the error
		// every call must return.
		wantErr error
	}{
		{
			name:    "endpointslices",
			replies: map[string]reply{svcCmd: svcs, slicesCmd: sl},
			calls:   2,
			wantRan: []string{slicesCmd, slicesCmd, svcCmd, svcCmd},
		},
		{
			name:    "no endpointslices: fall back once and for good",
			replies: map[string]reply{svcCmd: svcs, slicesCmd: {err: noSlices}, legacyCmd: legacy},
			calls:   3,
			wantRan: []string{slicesCmd, legacyCmd, legacyCmd, legacyCmd, svcCmd, svcCmd, svcCmd},
		},
		{
			name:    "other kubectl failure: no fallback",
			replies: map[string]reply{svcCmd: svcs, slicesCmd: {err: unauthorized}},
			calls:   2,
			wantRan: []string{slicesCmd, slicesCmd, svcCmd, svcCmd},
			wantErr: unauthorized,
		},
		{
			name:    "timeout: no fallback even if stderr matched",
			replies: map[string]reply{svcCmd: svcs, slicesCmd: {err: timedOut}},
			calls:   1,
			wantRan: []string{slicesCmd, svcCmd},
			wantErr: timedOut,
		},
		{
			name:    "fallback fails too",
			replies: map[string]reply{svcCmd: svcs, slicesCmd: {err: noSlices}, legacyCmd: {err: unauthorized}},
			calls:   2,
			wantRan: []string{slicesCmd, legacyCmd, legacyCmd, svcCmd, svcCmd},
			wantErr: unauthorized,
		},
		{
			name:    "the services list fails: no fallback",
			replies: map[string]reply{svcCmd: {err: svcNotFound}, slicesCmd: sl},
			calls:   2,
			wantRan: []string{slicesCmd, slicesCmd, svcCmd, svcCmd},
			wantErr: svcNotFound,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ran := fakeSource(t, tt.replies)
			for range tt.calls {
				got, _, err := s.Discover(context.Background())
				if tt.wantErr != nil {
					if !errors.Is(err, tt.wantErr) {
						t.Fatalf("Discover error %v, want %v", err, tt.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("Discover: %v", err)
				}
				if len(got) != len(wantFixture(false)) {
					t.Errorf("Discover returned %d services, want %d", len(got), len(wantFixture(false)))
				}
			}
			if diff := cmp.Diff(slices.Sorted(slices.Values(tt.wantRan)), ran()); diff != "" {
				t.Errorf("commands run (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDiscoverTypedLists: the typed lists of --raw parse to the same
// services as kubectl's List of both kinds.
func TestDiscoverTypedLists(t *testing.T) {
	for _, fx := range []struct {
		file, kind string
		legacy     bool
	}{{sliceFixture, "EndpointSlice", false}, {legacyFixture, "Endpoints", true}} {
		data := readFixture(t, fx.file)
		want, _, err := Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := Parse(typedList(t, data, "Service"), typedList(t, data, fx.kind))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got, addrComparer); diff != "" || len(got) != len(wantFixture(fx.legacy)) {
			t.Errorf("%s: typed lists (-List +typed):\n%s", fx.file, diff)
		}
	}
}

func TestDiscoverBadOutput(t *testing.T) {
	s, _ := fakeSource(t, map[string]reply{svcCmd: {out: []byte("Usage: kubectl ...")}, slicesCmd: {out: []byte(`{"kind":"EndpointSliceList","items":[]}`)}})
	_, _, err := s.Discover(context.Background())
	if err == nil || !strings.Contains(err.Error(), "root@master") {
		t.Fatalf("Discover error %v, want a parse error naming the master", err)
	}
}

func TestParseMaster(t *testing.T) {
	tests := []struct {
		in, user, addr, err string
	}{
		{in: "root@master", user: "root", addr: "master:22"},
		{in: "vagrant@10.0.0.5:2222", user: "vagrant", addr: "10.0.0.5:2222"},
		{in: "root@[::1]:2200", user: "root", addr: "[::1]:2200"},
		{in: "root@[2001:db8::1]", user: "root", addr: "[2001:db8::1]:22"},
		{in: "root@2001:db8::1", user: "root", addr: "[2001:db8::1]:22"},
		{in: "first.last@corp@master", user: "first.last@corp", addr: "master:22"},
		{in: "master", err: "no user"},
		{in: "@master", err: "no user"},
		{in: "root@", err: "no host"},
		{in: "root@master:0", err: "port 0"},
		{in: "root@master:70000", err: "port 70000"},
		{in: "root@master:ssh", err: "port ssh"},
		{in: "root@[::1]:x", err: "port x"},
		{in: "root@master name", err: "bad character"},
		{in: "root@master\n", err: "bad character"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			user, addr, err := parseMaster(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("parseMaster error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{tt.user, tt.addr}, []string{user, addr}); diff != "" {
				t.Errorf("user, addr (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	dir := t.TempDir()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	locked, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	lockedFile := filepath.Join(dir, "locked")
	if err := os.WriteFile(lockedFile, pem.EncodeToMemory(locked), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := Config{Master: "root@master", KeyFiles: []string{}, AgentSocket: "/nonexistent/agent", KnownHosts: filepath.Join(dir, "known_hosts")}
	tests := []struct {
		name string
		edit func(*Config)
		err  string
	}{
		{"kubectl with newline", func(c *Config) { c.Kubectl = "kubectl\nrm -rf /" }, "newline"},
		{"kubectl with NUL", func(c *Config) { c.Kubectl = "kubectl\x00" }, "NUL"},
		{"kubectl blank", func(c *Config) { c.Kubectl = "  " }, "empty"},
		{"bad master", func(c *Config) { c.Master = "master" }, "no user"},
		{"missing key file", func(c *Config) { c.KeyFiles = []string{filepath.Join(dir, "nope")} }, "no such file"},
		{"passphrase key", func(c *Config) { c.KeyFiles = []string{lockedFile} }, "passphrase"},
		{"garbage key", func(c *Config) { c.KeyFiles = []string{garbage} }, garbage},
		{"no key, no agent", func(c *Config) { c.NoAgent = true }, "no private key file and no ssh-agent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.edit(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("New error %v, want one containing %q", err, tt.err)
			}
		})
	}
	t.Run("valid", func(t *testing.T) {
		s, err := New(base)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close of an unconnected Source: %v", err)
		}
	})
}

func TestRequestTimeout(t *testing.T) {
	for _, tt := range []struct {
		command time.Duration
		want    string
	}{
		{60 * time.Second, " --request-timeout=54s"},
		{20 * time.Second, " --request-timeout=18s"},
		{1500 * time.Millisecond, " --request-timeout=1s"},
		{100 * time.Millisecond, " --request-timeout=1s"},
	} {
		if got := requestTimeout(tt.command); got != tt.want {
			t.Errorf("requestTimeout(%v) = %q, want %q", tt.command, got, tt.want)
		}
	}
}
