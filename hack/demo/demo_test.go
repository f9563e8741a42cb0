package main

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lbd/lbd/hack/lab"
	"github.com/lbd/lbd/internal/testkit"
)

func TestShellLine(t *testing.T) {
	tests := []struct {
		name string
		in   []string
		want string
	}{
		{"plain", []string{"ip", "netns", "exec", "lbd-demo-lb", "/tmp/x/lbd", "--master", "root@10.245.1.10:22"}, "ip netns exec lbd-demo-lb /tmp/x/lbd --master root@10.245.1.10:22"},
		{"spaces", []string{"--kubectl", "kubectl --kubeconfig /k"}, "--kubectl 'kubectl --kubeconfig /k'"},
		{"quote", []string{"it's"}, `'it'\''s'`},
		{"empty", []string{""}, "''"},
		{"shell chars", []string{"a;b", "$x", "*"}, `'a;b' '$x' '*'`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if d := cmp.Diff(tt.want, shellLine(tt.in)); d != "" {
				t.Errorf("shellLine(%q) (-want +got):\n%s", tt.in, d)
			}
		})
	}
}

// TestManifest compares the nginx manifests, all three pods and without
// pod2, with testdata/TestManifest.golden (go test -update rewrites it).
func TestManifest(t *testing.T) {
	pods := []netip.Addr{netip.MustParseAddr("10.246.82.2"), netip.MustParseAddr("10.246.82.6"), netip.MustParseAddr("10.246.92.8")}
	got := manifest(pods) + "# ---- without pod2 ----\n" + manifest(without(pods, 2))
	testkit.Golden(t, []byte(got))
}

func TestRemoveStateDir(t *testing.T) {
	tests := []struct {
		name        string
		make        func(dir string) error
		wantRemoved bool
		wantErr     bool
		wantGone    bool
	}{
		{"absent", func(string) error { return nil }, false, false, true},
		{"empty", func(dir string) error { return os.Mkdir(dir, 0o700) }, true, false, true},
		{"demo's", func(dir string) error {
			if err := os.MkdirAll(filepath.Join(dir, "lab", "logs"), 0o700); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, markerFile), nil, 0o644)
		}, true, false, true},
		{"someone else's", func(dir string) error {
			if err := os.Mkdir(dir, 0o700); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, "precious"), []byte("keep"), 0o644)
		}, false, true, false},
		{"a file", func(dir string) error { return os.WriteFile(dir, nil, 0o644) }, false, true, false},
		{"a symlink to a demo dir", func(dir string) error {
			real := dir + ".real"
			if err := os.Mkdir(real, 0o700); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(real, markerFile), nil, 0o644); err != nil {
				return err
			}
			return os.Symlink(real, dir)
		}, false, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			if err := tt.make(dir); err != nil {
				t.Fatal(err)
			}
			removed, err := removeStateDir(dir)
			if removed != tt.wantRemoved || (err != nil) != tt.wantErr {
				t.Errorf("removeStateDir = %v, %v; want removed=%v, error=%v", removed, err, tt.wantRemoved, tt.wantErr)
			}
			_, serr := os.Lstat(dir)
			if gone := os.IsNotExist(serr); gone != tt.wantGone {
				t.Errorf("dir gone = %v, want %v", gone, tt.wantGone)
			}
		})
	}
}

// TestUpDown runs the whole demo, as `make demo` and `make demo-down` do,
// and checks that every pod answered for each backend, that the removed
// pod got nothing after each removal, and that down leaves no lbd-demo-*
// namespace or process. It removes a demo a user left running.
func TestUpDown(t *testing.T) {
	lab.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "state")
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	t.Cleanup(func() {
		// down even when up failed half-way or an assertion stopped the test.
		var out bytes.Buffer
		if err := run(context.Background(), []string{"down", "-dir", dir}, &out, &out); err != nil {
			t.Errorf("down: %v\n%s", err, out.String())
		}
	})

	// 30 requests: the iptables backend picks pods at random, and 10 would
	// miss one of three pods in about 5% of runs.
	var out bytes.Buffer
	start := time.Now()
	err := run(ctx, []string{"up", "-dir", dir, "-install-deps=false", "-requests", "30"}, &out, &out)
	t.Logf("demo up in %s; output:\n%s", time.Since(start).Round(time.Millisecond), out.String())
	if err != nil {
		t.Fatalf("up: %v", err)
	}
	for _, backend := range []string{"iptables", "haproxy"} {
		first := section(t, out.String(), "["+backend+"] 30 requests from")
		again := section(t, out.String(), "["+backend+"] 30 requests again")
		for _, pod := range []string{"pod0", "pod1", "pod2"} {
			if n := hits(t, first, pod); n == 0 {
				t.Errorf("%s: %s answered none of the first requests:\n%s", backend, pod, first)
			}
			want := pod != "pod2"
			if n := hits(t, again, pod); (n > 0) != want {
				t.Errorf("%s: after removing pod2, %s answered %d requests:\n%s", backend, pod, n, again)
			}
		}
		stored := section(t, out.String(), "["+backend+"] what lbd stored")
		for _, s := range []string{"nginx", "10.247.78.179", "192.168.121.201", "80/TCP", "10.246.82.2:80", "10.246.82.6:80", "10.246.92.8:80",
			"ServiceName|NameSpace|ClusterIP|ExternalIP|Ports|Endpoints"} {
			// SQL names are case-insensitive; the notes spell Endpoints both ways.
			if !strings.Contains(strings.ToLower(stored), strings.ToLower(s)) {
				t.Errorf("%s: status and table do not mention %q:\n%s", backend, s, stored)
			}
		}
	}
	for _, s := range []string{"ip netns exec lbd-demo-client curl", "make demo-down"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("output lacks the exploring hint %q", s)
		}
	}
	// The lab outlives up: its wrapper script still reaches the cluster.
	if o, err := exec.CommandContext(ctx, filepath.Join(dir, "kubectl"), "get", "service", "nginx").CombinedOutput(); err != nil {
		t.Errorf("after up, the lab's kubectl: %v\n%s", err, o)
	}

	var downOut bytes.Buffer
	if err := run(ctx, []string{"down", "-dir", dir}, &downOut, &downOut); err != nil {
		t.Fatalf("down: %v\n%s", err, downOut.String())
	}
	t.Logf("demo down:\n%s", downOut.String())
	nsList, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(nsList), "lbd-demo-") {
		t.Errorf("namespaces left after down:\n%s", nsList)
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Errorf("state dir %s left after down: %v", dir, err)
	}
}

// section returns the output of the step whose heading contains title, up
// to the next heading.
func section(t *testing.T, out, title string) string {
	t.Helper()
	i := strings.Index(out, title)
	if i < 0 {
		t.Fatalf("output has no step %q", title)
	}
	s := out[i:]
	if j := strings.Index(s, "\n["); j >= 0 {
		s = s[:j]
	}
	return s
}

// hits reads how many requests pod answered from a traffic section's
// line "pod0  10.246.82.2  ####  4".
func hits(t *testing.T, section, pod string) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s+` + pod + `\s+[0-9.]+\s+#*\s+(\d+)`).FindStringSubmatch(section)
	if m == nil {
		t.Fatalf("no line for %s in:\n%s", pod, section)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
