package discovery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// events counts Watch's calls of event by resource type.
type events struct {
	mu sync.Mutex
	n  map[string]int
}

func (e *events) add(res string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == nil {
		e.n = map[string]int{}
	}
	e.n[res]++
}

func (e *events) get() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]int{}
	for k, v := range e.n {
		out[k] = v
	}
	return out
}

// waitFor polls cond every 20 ms for at most limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// watchResult runs Watch in the background; the channel yields its error.
func watchResult(ctx context.Context, s *Source, keepAlive time.Duration, ev *events) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- s.Watch(ctx, keepAlive, ev.add) }()
	return ch
}

// within returns what ch yields within limit, or fails the test.
func within(t *testing.T, ch <-chan error, limit time.Duration, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(limit):
		t.Fatalf("%s: Watch did not return within %v", what, limit)
		return nil
	}
}

// marker returns a unique argv[0] for the fake kubectl's blocking process,
// so the test can find it with remotePIDs.
func marker(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	m := "lbd-watch-test-" + hex.EncodeToString(b)
	t.Cleanup(func() {
		for _, pid := range remotePIDs(m) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return m
}

// watchScript is a fake kubectl: a watch of a resource prints "<res>/a"
// and "<res>/b", then runs then (by default, blocks as the process named
// mark); any other call prints the EndpointSlice fixture.
func watchScript(t *testing.T, mark, then string) (path, calls string) {
	t.Helper()
	if then == "" {
		then = "exec -a " + mark + " sleep 600"
	}
	return script(t, fmt.Sprintf(`case "$*" in
*--watch*) echo "$2/a"; echo "$2/b"; %s;;
esac
`, then)+rawLists(t, ""))
}

func TestWatch(t *testing.T) {
	d := startSSHD(t)

	t.Run("events over the shared connection; cancel ends the remote commands", func(t *testing.T) {
		mark := marker(t)
		kubectl, calls := watchScript(t, mark, "")
		s, _ := newTestSource(t, d, func(c *Config) { c.Kubectl = kubectl })
		if _, _, err := s.Discover(context.Background()); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ev := &events{}
		done := watchResult(ctx, s, 0, ev)
		want := map[string]int{"services": 2, "endpointslices.discovery.k8s.io": 2}
		waitFor(t, 10*time.Second, "two events of each watch", func() bool { return cmp.Equal(want, ev.get()) })
		waitFor(t, 5*time.Second, "two blocked remote watches", func() bool { return len(remotePIDs(mark)) == 2 })

		cancel()
		if err := within(t, done, 5*time.Second, "after cancel"); err != nil {
			t.Errorf("Watch after cancel = %v, want nil", err)
		}
		// Closing the sessions hung up their terminals: no kubectl lingers.
		waitFor(t, 5*time.Second, "the remote watches to end", func() bool { return len(remotePIDs(mark)) == 0 })

		log := callLog(t, calls)
		var args []string
		for _, c := range log {
			if connOf(c) != connOf(log[0]) {
				t.Errorf("call %q used another connection than %q", c, log[0])
			}
			_, a, _ := strings.Cut(c, "|")
			args = append(args, a)
		}
		wantArgs := []string{
			"get --raw /api/v1/services --request-timeout=18s",
			"get --raw /apis/discovery.k8s.io/v1/endpointslices --request-timeout=18s",
			"get endpointslices.discovery.k8s.io --all-namespaces --watch -o name",
			"get services --all-namespaces --watch -o name",
		}
		slices.Sort(args) // the lists, and the watches, start in either order
		if diff := cmp.Diff(wantArgs, args); diff != "" {
			t.Errorf("remote commands (-want +got):\n%s", diff)
		}
		if ev.get()["services"] != 2 {
			t.Errorf("events after cancel: %v", ev.get())
		}
	})

	t.Run("a watch that ends stops the other", func(t *testing.T) {
		tests := []struct {
			name       string
			then       string
			wantEnded  bool
			wantStatus int
			wantText   string
		}{
			{name: "exit 0: the server closed the watch", then: "exit 0", wantEnded: true},
			{name: "exit 3 with a message", then: "echo 'error: Unauthorized' >&2; exit 3", wantStatus: 3, wantText: "error: Unauthorized"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				mark := marker(t)
				// Only the services watch ends; the other blocks.
				then := fmt.Sprintf(`if [ "$2" = services ]; then %s; fi; exec -a %s sleep 600`, tt.then, mark)
				kubectl, _ := watchScript(t, mark, then)
				s, _ := newTestSource(t, d, func(c *Config) { c.Kubectl = kubectl })
				err := within(t, watchResult(context.Background(), s, 0, &events{}), 10*time.Second, tt.name)
				if err == nil {
					t.Fatal("Watch = nil, want an error")
				}
				if !strings.Contains(err.Error(), "watch services on root@") {
					t.Errorf("error %q does not say which watch on which master", err)
				}
				if got := errors.Is(err, ErrWatchEnded); got != tt.wantEnded {
					t.Errorf("errors.Is(%v, ErrWatchEnded) = %v, want %v", err, got, tt.wantEnded)
				}
				if !tt.wantEnded {
					ce, ok := errors.AsType[*CommandError](err)
					if !ok {
						t.Fatalf("error %v (%T) is not a *CommandError", err, err)
					}
					if ce.ExitStatus != tt.wantStatus || !strings.Contains(ce.Stderr, tt.wantText) {
						t.Errorf("CommandError status %d stderr %q, want %d and %q", ce.ExitStatus, ce.Stderr, tt.wantStatus, tt.wantText)
					}
				}
				waitFor(t, 5*time.Second, "the other watch to end", func() bool { return len(remotePIDs(mark)) == 0 })
			})
		}
	})

	t.Run("no EndpointSlice API: the next watch reads endpoints", func(t *testing.T) {
		mark := marker(t)
		then := fmt.Sprintf(`if [ "$2" = endpointslices.discovery.k8s.io ]; then cat %s >&2; exit 1; fi; exec -a %s sleep 600`,
			filepath.Join(mustAbs(t, "testdata"), "no-endpointslices.stderr"), mark)
		kubectl, calls := watchScript(t, mark, then)
		s, logs := newTestSource(t, d, func(c *Config) { c.Kubectl = kubectl })
		err := within(t, watchResult(context.Background(), s, 0, &events{}), 10*time.Second, "first watch")
		if !noEndpointSlices(errors.Unwrap(err)) {
			t.Fatalf("first Watch = %v, want kubectl's missing-resource error", err)
		}
		if !strings.Contains(logs.String(), "no EndpointSlice API") {
			t.Errorf("the fallback was not logged:\n%s", logs)
		}
		ctx, cancel := context.WithCancel(context.Background())
		ev := &events{}
		done := watchResult(ctx, s, 0, ev)
		waitFor(t, 10*time.Second, "endpoints events", func() bool { return ev.get()["endpoints"] == 2 })
		cancel()
		if err := within(t, done, 5*time.Second, "second watch"); err != nil {
			t.Errorf("second Watch = %v", err)
		}
		log := strings.Join(callLog(t, calls), "\n")
		if !strings.Contains(log, "|get endpoints --all-namespaces --watch -o name") {
			t.Errorf("no endpoints watch in the calls:\n%s", log)
		}
	})

	t.Run("a broken connection ends the watch", func(t *testing.T) {
		mark := marker(t)
		kubectl, _ := watchScript(t, mark, "")
		s, _ := newTestSource(t, d, func(c *Config) { c.Kubectl = kubectl })
		ev := &events{}
		done := watchResult(context.Background(), s, 0, ev)
		waitFor(t, 10*time.Second, "the watches", func() bool { return len(ev.get()) == 2 })
		for _, pid := range d.children() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		err := within(t, done, 5*time.Second, "after the connection broke")
		ce, ok := errors.AsType[*CommandError](err)
		if !ok || ce.ExitStatus != -1 {
			t.Fatalf("Watch = %v, want a *CommandError without exit status", err)
		}
		// The Source dials again for the next call.
		if _, _, err := s.Discover(context.Background()); err != nil {
			t.Errorf("Discover after the broken watch: %v", err)
		}
	})

	t.Run("a master that stops answering is detected by keepalives", func(t *testing.T) {
		mark := marker(t)
		kubectl, _ := watchScript(t, mark, "")
		s, logs := newTestSource(t, d, func(c *Config) { c.Kubectl = kubectl })
		ev := &events{}
		done := watchResult(context.Background(), s, 300*time.Millisecond, ev)
		waitFor(t, 10*time.Second, "the watches", func() bool { return len(ev.get()) == 2 })
		// Freeze the connection's sshd processes: TCP stays up, nothing
		// answers, as with a master that vanished from the network.
		frozen := sshdTree(d)
		for _, pid := range frozen {
			syscall.Kill(pid, syscall.SIGSTOP)
		}
		t.Cleanup(func() {
			for _, pid := range frozen {
				syscall.Kill(pid, syscall.SIGKILL)
				syscall.Kill(pid, syscall.SIGCONT)
			}
		})
		start := time.Now()
		err := within(t, done, 5*time.Second, "after the master froze")
		if ce, ok := errors.AsType[*CommandError](err); !ok || !strings.Contains(ce.Error(), "keepalive") {
			t.Errorf("Watch = %v, want a *CommandError about keepalives", err)
		}
		t.Logf("frozen master detected after %v (keepalive 300ms)", time.Since(start))
		if !strings.Contains(logs.String(), "does not answer keepalives") {
			t.Errorf("not logged:\n%s", logs)
		}
	})
}

// sshdTree returns the sshd processes below d's listener (the per-connection
// monitor and its session children), not the listener itself.
func sshdTree(d *testSSHD) []int {
	parent := map[int]int{}
	comm := map[int]string{}
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
		open, close := strings.IndexByte(string(b), '('), strings.LastIndexByte(string(b), ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(string(b[close+1:]))
		if len(f) > 1 {
			parent[pid], _ = strconv.Atoi(f[1])
			comm[pid] = string(b[open+1 : close])
		}
	}
	root := d.cmd.Process.Pid
	var out []int
	for pid := range parent {
		if !strings.HasPrefix(comm[pid], "sshd") {
			continue
		}
		for p := parent[pid]; p > 1; p = parent[p] {
			if p == root {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// TestWatchFake checks Watch's plumbing without SSH: the resource types,
// the first error stopping the other stream, the fallback.
func TestWatchFake(t *testing.T) {
	var mu sync.Mutex
	var cmds []string
	s := &Source{
		kubectl: "k",
		master:  "root@m",
		log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		stream: func(ctx context.Context, cmd string, keepAlive time.Duration, line func([]byte)) error {
			mu.Lock()
			cmds = append(cmds, cmd)
			mu.Unlock()
			if keepAlive != DefaultKeepAlive {
				t.Errorf("keepAlive %v, want the default", keepAlive)
			}
			line([]byte("x/y"))
			if strings.Contains(cmd, "endpointslices") {
				return &CommandError{ExitStatus: 1, Stderr: `error: the server doesn't have a resource type "endpointslices"`}
			}
			if strings.Contains(cmd, " endpoints ") {
				return fmt.Errorf("fake: %w", ErrWatchEnded)
			}
			<-ctx.Done() // stopped by the other's failure
			return nil
		},
	}
	ev := &events{}
	err := s.Watch(context.Background(), 0, ev.add)
	if !noEndpointSlices(errors.Unwrap(err)) || !strings.HasPrefix(err.Error(), "watch endpointslices.discovery.k8s.io on root@m: ") {
		t.Fatalf("Watch = %v", err)
	}
	if !s.legacy {
		t.Error("the Source did not switch to Endpoints")
	}
	if err := s.Watch(context.Background(), 0, ev.add); !errors.Is(err, ErrWatchEnded) {
		t.Errorf("second Watch = %v, want ErrWatchEnded", err)
	}
	want := map[string]int{"services": 2, "endpointslices.discovery.k8s.io": 1, "endpoints": 1}
	if diff := cmp.Diff(want, ev.get()); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if len(cmds) != 4 || !strings.Contains(strings.Join(cmds, "\n"), "k get endpoints --all-namespaces --watch -o name") {
		t.Errorf("commands: %q", cmds)
	}
}
