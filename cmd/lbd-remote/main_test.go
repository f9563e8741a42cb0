package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestAllow: exactly lbd's commands pass, with any whole-second timeout;
// every near miss, an extra word, a shell metacharacter, another spacing
// or another kubeconfig is refused.
func TestAllow(t *testing.T) {
	ok := []string{
		"kubectl get services,endpointslices.discovery.k8s.io --all-namespaces -o json --request-timeout=54s",
		"kubectl get services,endpointslices.discovery.k8s.io --all-namespaces -o json --request-timeout=1s",
		"kubectl get services,endpoints --all-namespaces -o json --request-timeout=54s",
		"kubectl get services --all-namespaces --watch -o name",
		"kubectl get endpointslices.discovery.k8s.io --all-namespaces --watch -o name",
		"kubectl get endpoints --all-namespaces --watch -o name",
		"kubectl apply --server-side --subresource=status --field-manager=lbd --force-conflicts -o name -f - --request-timeout=54s",
	}
	for _, cmd := range ok {
		got, err := allow(cmd)
		if err != nil {
			t.Errorf("allow(%q): %v", cmd, err)
			continue
		}
		if diff := cmp.Diff(strings.Fields(cmd)[1:], got); diff != "" {
			t.Errorf("allow(%q) (-want +got):\n%s", cmd, diff)
		}
	}
	refused := []struct{ cmd, why string }{
		{"", "no command"},
		{"id", "not a kubectl command"},
		{"sudo kubectl get services --all-namespaces --watch -o name", "not a kubectl command"},
		{"/usr/bin/kubectl get services --all-namespaces --watch -o name", "not a kubectl command"},
		{"kubectl get secrets -A", "not one of"},
		{"kubectl get secrets --all-namespaces -o json --request-timeout=54s", "not one of"},
		{"kubectl get services --all-namespaces --watch -o name; id", "not one of"},
		{"kubectl get services --all-namespaces --watch -o name && id", "not one of"},
		{"kubectl get services --all-namespaces --watch -o name\nid", "not one of"},
		{"kubectl get services  --all-namespaces --watch -o name", "not one of"},
		{"kubectl get services --all-namespaces --watch -o name ", "not one of"},
		{"kubectl\tget services --all-namespaces --watch -o name", "not a kubectl command"},
		{"kubectl get services --all-namespaces --watch -o yaml", "not one of"},
		{"kubectl get services,endpoints --all-namespaces -o json", "not one of"},
		{"kubectl get services,endpoints --all-namespaces -o json --request-timeout=0s", "not one of"},
		{"kubectl get services,endpoints --all-namespaces -o json --request-timeout=5m", "not one of"},
		{"kubectl get services,endpoints --all-namespaces -o json --request-timeout=5", "not one of"},
		{"kubectl get services,endpoints --all-namespaces -o json --request-timeout=$(id)s", "not one of"},
		{"kubectl get services,endpoints --all-namespaces -o json --request-timeout=1234567s", "not one of"},
		{"kubectl get services,endpoints --all-namespaces -o json --request-timeout=5s --kubeconfig=/etc/kubernetes/admin.conf", "not one of"},
		{"kubectl --kubeconfig=/etc/kubernetes/admin.conf get services --all-namespaces --watch -o name", "not one of"},
		{"kubectl apply --server-side --subresource=status --field-manager=lbd --force-conflicts -o name -f /etc/passwd --request-timeout=5s", "not one of"},
		{"kubectl apply --server-side --field-manager=lbd --force-conflicts -o name -f - --request-timeout=5s", "not one of"},
		{"kubectl delete services --all --all-namespaces", "not one of"},
		{"kubectl", "not one of"},
	}
	for _, r := range refused {
		_, err := allow(r.cmd)
		if !errors.Is(err, errRefused) || !strings.Contains(err.Error(), r.why) {
			t.Errorf("allow(%q) = %v, want refused with %q", r.cmd, err, r.why)
		}
	}
}

// TestRun: an allowed command execs kubectl with the fixed kubeconfig, a
// clean environment and the client's words as separate arguments; a
// refused one never execs and exits 126 with the reason on stderr; a bad
// authorized_keys line exits 125.
func TestRun(t *testing.T) {
	kubectl := filepath.Join(t.TempDir(), "kubectl")
	if err := os.WriteFile(kubectl, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	environ := map[string]string{"HOME": "/home/lbd", "KUBECONFIG": "/etc/kubernetes/admin.conf", "LD_PRELOAD": "/tmp/x.so"}
	type execd struct {
		argv0      string
		argv, envv []string
	}
	tests := []struct {
		name     string
		args     []string
		cmd      string
		want     *execd
		code     int
		stderrIn string
	}{
		{
			name: "watch",
			args: []string{"--kubectl=" + kubectl, "--kubeconfig=/etc/lbd-remote/kubeconfig", "--cache-dir=/var/cache/lbd-remote"},
			cmd:  "kubectl get services --all-namespaces --watch -o name",
			want: &execd{kubectl, []string{kubectl, "--kubeconfig=/etc/lbd-remote/kubeconfig", "--cache-dir=/var/cache/lbd-remote", "get", "services", "--all-namespaces", "--watch", "-o", "name"},
				[]string{"PATH=" + safePath, "HOME=/home/lbd"}},
			code: exitConfig, // the fake exec returns, as a failed exec would
		},
		{
			name: "default kubeconfig",
			args: []string{"--kubectl=" + kubectl},
			cmd:  "kubectl apply --server-side --subresource=status --field-manager=lbd --force-conflicts -o name -f - --request-timeout=9s",
			want: &execd{kubectl, []string{kubectl, "--kubeconfig=" + DefaultKubeconfig, "apply", "--server-side", "--subresource=status", "--field-manager=lbd", "--force-conflicts", "-o", "name", "-f", "-", "--request-timeout=9s"},
				[]string{"PATH=" + safePath, "HOME=/home/lbd"}},
			code: exitConfig,
		},
		{name: "refused", args: []string{"--kubectl=" + kubectl}, cmd: "kubectl get secrets -A", code: exitRefused,
			stderrIn: `lbd-remote: refused: "kubectl get secrets -A": not one of the kubectl commands lbd sends`},
		{name: "login", args: []string{"--kubectl=" + kubectl}, cmd: "", code: exitRefused, stderrIn: "no command"},
		{name: "relative kubeconfig", args: []string{"--kubectl=" + kubectl, "--kubeconfig=kc"}, cmd: "kubectl get services --all-namespaces --watch -o name",
			code: exitConfig, stderrIn: "misconfigured in authorized_keys: --kubeconfig"},
		{name: "kubectl not found", args: []string{"--kubectl=no-such-kubectl-here"}, cmd: "kubectl get services --all-namespaces --watch -o name",
			code: exitConfig, stderrIn: "not found in"},
		{name: "stray argument", args: []string{"--kubectl=" + kubectl, "x"}, cmd: "kubectl get services --all-namespaces --watch -o name",
			code: exitConfig, stderrIn: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got *execd
			fake := func(argv0 string, argv, envv []string) error {
				got = &execd{argv0, argv, envv}
				return errors.New("fake exec")
			}
			getenv := func(k string) string {
				if k == "SSH_ORIGINAL_COMMAND" {
					return tt.cmd
				}
				return environ[k]
			}
			var stderr strings.Builder
			code := run(tt.args, getenv, &stderr, fake)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, stderr.String())
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(execd{})); diff != "" {
				t.Errorf("exec (-want +got):\n%s", diff)
			}
			if !strings.Contains(stderr.String(), tt.stderrIn) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tt.stderrIn)
			}
		})
	}
}
