package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/lbd/lbd/hack/lab"
)

// Traffic helpers for the end-to-end tests: every request leaves the lab's
// client namespace and is bounded in count and time.

// newConnClient is an HTTP client in the client namespace that opens a new
// connection for every request, so each one is balanced afresh.
func newConnClient(l *lab.Lab) *http.Client {
	return &http.Client{
		Timeout: 3 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return l.Dial(ctx, l.ClientNS, network, addr)
			},
		},
	}
}

// hits sends n requests to addr ("ip:port") and counts the answering pods;
// failures are counted under "error: <reason>".
func hits(t *testing.T, l *lab.Lab, addr string, n int) map[string]int {
	t.Helper()
	c := newConnClient(l)
	got := map[string]int{}
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < n && time.Now().Before(deadline); i++ {
		resp, err := c.Get("http://" + addr + "/")
		if err != nil {
			got["error: "+shortErr(err)]++
			continue
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		resp.Body.Close()
		got[strings.TrimSpace(string(body))]++
	}
	return got
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}

// dialFails reports how a TCP connect from the client to addr fails, and
// how long it took; "" when it succeeded.
func dialFails(l *lab.Lab, addr string) (string, time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	c, err := l.Dial(ctx, l.ClientNS, "tcp", addr)
	if err != nil {
		return shortErr(err), time.Since(start)
	}
	// A DNAT to a pod answers the handshake; make sure the far end is a
	// pod by reading its answer.
	fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, rerr := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if rerr != nil {
		return "read: " + shortErr(rerr), time.Since(start)
	}
	return "", time.Since(start)
}

// udpAsk sends one datagram on conn and returns the pod name that answers.
func udpAsk(conn net.Conn) (string, error) {
	if _, err := conn.Write([]byte("who\n")); err != nil {
		return "", err
	}
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 256)
	n, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

// podsExcept returns the lab's pod IPs without the one named skip.
func podsExcept(l *lab.Lab, skip string) []netip.Addr {
	var out []netip.Addr
	for i, name := range l.PodNames {
		if name != skip {
			out = append(out, l.PodIPs[i])
		}
	}
	return out
}

// deleteService removes a lab service and its endpoint objects.
func deleteService(t *testing.T, l *lab.Lab, ns, name string) {
	t.Helper()
	mustKubectl(t, l, "delete", "-n", ns, "--ignore-not-found", "service/"+name, "endpoints/"+name, "endpointslice/"+name+"-lab")
}

// applyService creates spec with kubectl, deletes it when t ends, and
// returns a function that applies it again with other ready endpoints.
func applyService(t *testing.T, l *lab.Lab, spec lab.ServiceSpec) func(ready []netip.Addr) {
	t.Helper()
	apply := func(ready []netip.Addr) {
		t.Helper()
		s := spec
		s.Ready = ready
		if err := l.Apply(t.Context(), lab.ServiceManifest(s)); err != nil {
			t.Fatal(err)
		}
	}
	apply(spec.Ready)
	t.Cleanup(func() { deleteService(t, l, "default", spec.Name) })
	return apply
}

// checkServing is the proof both backends owe on ext: 300 new connections
// to :80 spread over the pods, 60 to 140 each; both ports (:8080, :8443)
// of a two-port service answer; ClientIP affinity on :81 keeps one client
// on one pod.
func checkServing(t *testing.T, l *lab.Lab, ext netip.Addr) {
	t.Helper()
	got := hits(t, l, ext.String()+":80", 300)
	t.Logf("300 requests to %s:80: %v", ext, got)
	for _, pod := range l.PodNames {
		if got[pod] < 60 || got[pod] > 140 {
			t.Errorf("pod %s got %d of 300 requests, want 60-140 (all: %v)", pod, got[pod], got)
		}
	}
	for _, port := range []string{":8080", ":8443"} {
		if got := hits(t, l, ext.String()+port, 6); sum(got, l.PodNames) != 6 {
			t.Errorf("two-port service on %s: %v", port, got)
		}
	}
	if got := hits(t, l, ext.String()+":81", 30); len(got) != 1 || sum(got, l.PodNames) != 30 {
		t.Errorf("affinity: 30 requests from one client reached %v, want one pod", got)
	}
}
