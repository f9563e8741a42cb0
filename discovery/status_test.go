package discovery

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/lb"
)

// TestWriteStatus: one kubectl run, whose command line holds nothing from
// the cluster; the objects go on stdin, conditional on uid and
// resourceVersion; objects kubectl did not write come back with its reason.
func TestWriteStatus(t *testing.T) {
	var gotCmd string
	var gotIn []byte
	s := &Source{kubectl: "kubectl", master: "root@m", runInput: func(_ context.Context, cmd string, stdin []byte) ([]byte, error) {
		gotCmd, gotIn = cmd, stdin
		return []byte("service/web\n"), &CommandError{ExitStatus: 1, Stderr: `Error from server (Conflict): Operation cannot be fulfilled on services "evil": the object has been modified`}
	}}
	writes := []lb.StatusWrite{
		{Namespace: "default", Name: "web", UID: "u-1", ResourceVersion: "7", Ingress: []netip.Addr{netip.MustParseAddr("192.168.121.240")}, IPMode: "VIP"},
		{Namespace: "shop", Name: "evil", UID: "u-2", ResourceVersion: "9"},
	}
	failed, err := s.WriteStatus(t.Context(), writes)
	if err != nil {
		t.Fatal(err)
	}
	if want := "kubectl apply --server-side --subresource=status --field-manager=lbd --force-conflicts -o name -f -"; gotCmd != want {
		t.Errorf("command %q, want %q", gotCmd, want)
	}
	for _, w := range writes {
		if strings.Contains(gotCmd, w.Name) || strings.Contains(gotCmd, w.UID) {
			t.Errorf("command %q holds a value from the cluster", gotCmd)
		}
	}
	var list struct {
		Kind  string        `json:"kind"`
		Items []applyObject `json:"items"`
	}
	if err := json.Unmarshal(gotIn, &list); err != nil {
		t.Fatalf("stdin is not JSON: %v: %s", err, gotIn)
	}
	want := `{"apiVersion":"v1","kind":"List","items":[` +
		`{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"default","uid":"u-1","resourceVersion":"7"},"status":{"loadBalancer":{"ingress":[{"ip":"192.168.121.240","ipMode":"VIP"}]}}},` +
		`{"apiVersion":"v1","kind":"Service","metadata":{"name":"evil","namespace":"shop","uid":"u-2","resourceVersion":"9"},"status":{"loadBalancer":{}}}]}`
	if d := cmp.Diff(want, string(gotIn)); d != "" {
		t.Errorf("stdin (-want +got):\n%s", d)
	}
	wantFailed := []lb.Skipped{{Key: "shop/evil", Reason: `Error from server (Conflict): Operation cannot be fulfilled on services "evil": the object has been modified`}}
	if d := cmp.Diff(wantFailed, failed); d != "" {
		t.Errorf("failed (-want +got):\n%s", d)
	}

	// A command that cannot run at all is an error, not a list.
	s.runInput = func(context.Context, string, []byte) ([]byte, error) {
		return nil, &CommandError{ExitStatus: -1, Err: context.DeadlineExceeded}
	}
	if _, err := s.WriteStatus(t.Context(), writes); err == nil {
		t.Error("a lost connection is not an error")
	}
	// Nothing to write runs nothing.
	s.runInput = nil
	if f, err := s.WriteStatus(t.Context(), nil); f != nil || err != nil {
		t.Errorf("empty write: %v, %v", f, err)
	}
}
