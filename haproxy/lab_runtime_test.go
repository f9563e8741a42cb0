package haproxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lbd/lbd/lb"
)

// TestLabRuntime proves the runtime API path against a real haproxy:
// endpoint changes under load without a reload, draining of a terminating
// endpoint, and ClientIP affinity that survives a reload and expires.
func TestLabRuntime(t *testing.T) {
	h := startLabHaproxy(t, "hpkrt")
	l := h.l
	ext, ext2 := l.LBExternalIP, netip.MustParseAddr("192.168.121.202")
	m := masterCLI{path: h.b.o.MasterSocket}
	nginx := labService(l, "nginx", ext, map[uint16]uint16{80: 80})
	h.apply(t, nginx)

	t.Run("20 endpoint changes under load, no reload", func(t *testing.T) {
		addr := netip.AddrPortFrom(ext, 80).String()
		before, err := m.showProc(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		r0, c0 := h.b.Stats()
		// The changes cycle: pod1 not ready, ready again, pod2 removed,
		// added back.
		states := []lb.Service{}
		for i := range 20 {
			s := labService(l, "nginx", ext, map[uint16]uint16{80: 80})
			switch i % 4 {
			case 0:
				s.Ports[0].Endpoints[1].Ready, s.Ports[0].Endpoints[1].Serving = false, false
			case 2:
				s.Ports[0].Endpoints = slices.Delete(s.Ports[0].Endpoints, 2, 3)
			}
			states = append(states, s)
		}
		type reply struct {
			sent time.Time
			pod  string
			err  error
		}
		var (
			mu      sync.Mutex
			replies []reply
			wg      sync.WaitGroup
			changes []time.Time // when each Apply started
			took    []time.Duration
		)
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		const rate, d = 200, 12 * time.Second
		done := make(chan struct{})
		go func() {
			defer close(done)
			every := d / 21
			for i, s := range states {
				time.Sleep(time.Until(time.Now().Add(every)))
				start := time.Now()
				if _, err := h.b.Apply(ctx, []lb.Service{s}, nil); err != nil {
					t.Errorf("change %d: %v", i, err)
				}
				mu.Lock()
				changes, took = append(changes, start), append(took, time.Since(start))
				mu.Unlock()
			}
		}()
		tick := time.NewTicker(time.Second / rate)
		start := time.Now()
		for n := 0; n < rate*int(d/time.Second) && time.Since(start) < d+5*time.Second; n++ {
			<-tick.C
			wg.Add(1)
			go func() {
				defer wg.Done()
				sent := time.Now()
				pod, err := h.get(ctx, addr)
				mu.Lock()
				replies = append(replies, reply{sent, pod, err})
				mu.Unlock()
			}()
		}
		tick.Stop()
		wg.Wait()
		<-done
		failed := 0
		for _, r := range replies {
			if r.err != nil {
				failed++
				if failed == 1 {
					t.Errorf("request failed: %v", r.err)
				}
			}
		}
		// Live within 100 ms: no request sent later than that after a
		// change that took a pod out reaches the pod.
		t.Logf("Apply durations: %v", took)
		late, maxTook := 0, time.Duration(0)
		for i, c := range changes {
			maxTook = max(maxTook, took[i])
			out := ""
			switch i % 4 {
			case 0:
				out = l.PodNames[1]
			case 2:
				out = l.PodNames[2]
			default:
				continue
			}
			end := time.Now()
			if i+1 < len(changes) {
				end = changes[i+1]
			}
			for _, r := range replies {
				if r.err == nil && r.pod == out && r.sent.After(c.Add(100*time.Millisecond)) && r.sent.Before(end) {
					late++
				}
			}
		}
		after, err := m.showProc(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		r1, c1 := h.b.Stats()
		workers, err := h.b.Workers(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		msg := fmt.Sprintf("haproxy runtime lab: %d requests in %v, %d failed, %d changes (slowest Apply %v), %d requests reached a removed pod >100ms after its change, reloads %d (master says %d), runtime changes %d, worker %v -> %v, workers alive %d",
			len(replies), time.Since(start).Round(time.Millisecond), failed, len(changes), maxTook.Round(time.Microsecond), late,
			r1-r0, after.reloads-before.reloads, c1-c0, before.workers, after.workers, workers)
		t.Log(msg)
		fmt.Println(msg)
		if failed > 0 || late > 0 || r1 != r0 || after.reloads != before.reloads || c1-c0 != 20 || workers != 1 || !slices.Equal(before.workers, after.workers) {
			t.Errorf("want 0 failed, 0 late, 0 reloads, 20 runtime changes, the same single worker")
		}
	})

	t.Run("terminating endpoint drains", func(t *testing.T) {
		addr := netip.AddrPortFrom(ext, 80).String()
		h.apply(t, nginx)
		// A keep-alive stream that reached pod0.
		var c net.Conn
		var br *bufio.Reader
		for range 10 {
			conn, err := l.Dial(t.Context(), l.ClientNS, "tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			r := bufio.NewReader(conn)
			if pod, err := ask(conn, r); err == nil && pod == l.PodNames[0] {
				c, br = conn, r
				break
			}
			conn.Close()
		}
		if c == nil {
			t.Fatal("no connection reached pod0")
		}
		defer c.Close()
		r0, _ := h.b.Stats()
		term := labService(l, "nginx", ext, map[uint16]uint16{80: 80})
		term.Ports[0].Endpoints[0].Ready, term.Ports[0].Endpoints[0].Terminating = false, true
		h.apply(t, term)
		got := h.spread(t, addr, 30)
		// The open stream goes on for 2 s, all on pod0.
		for i := range 10 {
			pod, err := ask(c, br)
			if err != nil || pod != l.PodNames[0] {
				t.Fatalf("stream request %d after drain: %q %v, want pod0", i, pod, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		r1, _ := h.b.Stats()
		t.Logf("drain: open stream kept pod0 for 10 requests over 2 s; 30 new connections reached %v; reloads %d", got, r1-r0)
		if got[l.PodNames[0]] > 0 || r1 != r0 {
			t.Errorf("new connections reached the draining pod0 (%v) or haproxy reloaded (%d)", got, r1-r0)
		}
		h.apply(t, nginx)
	})

	t.Run("ClientIP affinity survives a reload and expires", func(t *testing.T) {
		sticky := labService(l, "sticky", ext2, map[uint16]uint16{8080: 8080})
		sticky.Affinity, sticky.AffinityTimeout = lb.AffinityClientIP, 5*time.Second
		h.apply(t, nginx, sticky)
		addr := netip.AddrPortFrom(ext2, 8080).String()
		table := func() string {
			out, err := h.b.stats(t.Context(), "show table "+ProxyName(&sticky, sticky.Ports[0]))
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
		// Take the client off the first pod (where a new process's round
		// robin starts), so that a table lost at the reload would show.
		h.get(t.Context(), addr)
		if out, err := h.b.stats(t.Context(), "clear table "+ProxyName(&sticky, sticky.Ports[0])+" key "+l.ClientIP.String()); err != nil {
			t.Fatalf("clear table: %v %s", err, out)
		}
		// The worker this apply started is not ready to hand its table
		// over for 5-10 s (see awaitPeers). The reload below waits for
		// that itself; waiting here first keeps the client's entry from
		// expiring (5 s) during that wait, which would hide a lost table.
		h.b.awaitPeers(t.Context())
		var pod string
		for range 3 {
			got := h.spread(t, addr, 5)
			if len(got) != 1 {
				t.Fatalf("ClientIP answers from %v, want one pod", got)
			}
			for p := range got {
				pod = p
			}
		}
		before, _ := m.showProc(t.Context())
		other := labService(l, "other", ext2, map[uint16]uint16{8443: 8443})
		h.apply(t, nginx, sticky, other) // a new service: a reload
		after, _ := m.showProc(t.Context())
		if after.reloads == before.reloads {
			t.Fatalf("adding a service did not reload haproxy")
		}
		// The old worker hands its table over once the new one runs.
		for start := time.Now(); !strings.Contains(table(), "key="+l.ClientIP.String()) && time.Since(start) < 3*time.Second; {
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("stick table after the reload: %s", strings.TrimSpace(table()))
		got := h.spread(t, addr, 10)
		if pod == l.PodNames[0] {
			t.Errorf("the client is on %s, where a new process starts anyway", pod)
		}
		if len(got) != 1 || got[pod] != 10 {
			t.Errorf("after a reload the client reached %v, want %s only: the stick table was not handed over", got, pod)
		}
		// Idle for less than the timeout: the client stays. Idle for the
		// timeout: the entry goes and the client is free to move.
		start := time.Now()
		time.Sleep(4 * time.Second)
		if !strings.Contains(table(), "key="+l.ClientIP.String()) {
			t.Errorf("entry gone %v after the last request, want it kept for the 5 s timeout:\n%s", time.Since(start).Round(100*time.Millisecond), table())
		}
		for strings.Contains(table(), "key="+l.ClientIP.String()) {
			if time.Since(start) > 7*time.Second {
				t.Fatalf("entry still there %v after the last request, want it gone after 5 s:\n%s", time.Since(start), table())
			}
			time.Sleep(100 * time.Millisecond)
		}
		expired := time.Since(start)
		next, err := h.get(t.Context(), addr)
		msg := fmt.Sprintf("haproxy affinity lab: client on %s across a reload (workers %v -> %v); entry expired %v after the last request; next request to %s (%v)",
			pod, before.workers, after.workers, expired.Round(100*time.Millisecond), next, err)
		t.Log(msg)
		fmt.Println(msg)
		if err != nil {
			t.Fatal(err)
		}
		// The new worker's round robin has not picked for this backend
		// yet, so it starts at the first pod, where the client was not.
		if next == pod {
			t.Errorf("after the entry expired the client stayed on %s, want it to move", pod)
		}
	})
}

// ask sends one HTTP/1.1 request on c and returns the pod that answered.
func ask(c net.Conn, r *bufio.Reader) (string, error) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: lab\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(b)), err
}
