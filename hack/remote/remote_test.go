package remote_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lbd/lbd/hack/lab"
	"github.com/lbd/lbd/internal/testkit"
)

// pool is the address pool for the test's LoadBalancer services.
const pool = "192.168.121.250-192.168.121.251"

// metricsAddr is where the test's lbd run serves metrics, on the LB
// namespace's loopback.
const metricsAddr = "127.0.0.1:9731"

// TestLeastPrivilege is the least-privilege proof on a lab whose
// apiserver authorizes with RBAC: lbd, logging in with a key whose forced
// command is lbd-remote and that runs kubectl with the ServiceAccount of
// rbac.yaml (kubeconfig from kubeconfig.sh, whose --secret form is checked
// too), discovers services, writes
// LoadBalancer status and watches; the same key cannot run anything else
// (each refusal says why, exit 126); and the ServiceAccount itself cannot
// read Secrets or write outside services/status.
func TestLeastPrivilege(t *testing.T) {
	testkit.RequireRoot(t)
	bin := buildBinaries(t)
	l := lab.ForTest(t, lab.Options{Name: "lpriv", Cluster: true, RBAC: true, Pods: 2})
	ctx := t.Context()

	// Under RBAC, the lab's admin keeps every right (system:masters).
	rbac, err := os.ReadFile("rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Apply(ctx, string(rbac)); err != nil {
		t.Fatal(err)
	}

	// The ServiceAccount's kubeconfig, made on the master by kubeconfig.sh
	// with the admin's kubectl, as the install guide does.
	script, err := filepath.Abs("kubeconfig.sh")
	if err != nil {
		t.Fatal(err)
	}
	gen := l.Command(ctx, l.MasterNS, "/bin/sh", script, "--duration", "1h")
	gen.Env = append(os.Environ(), "KUBECTL="+l.KubectlRemote)
	var genErr strings.Builder
	gen.Stderr = &genErr
	kc, err := gen.Output()
	if err != nil {
		t.Fatalf("kubeconfig.sh: %v: %s", err, genErr.String())
	}
	saKubeconfig := filepath.Join(l.Dir, "lbd-remote.kubeconfig")
	if err := os.WriteFile(saKubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	kubectlBin := strings.Fields(l.KubectlRemote)[0] // the lab's kubectl binary
	cacheDir := filepath.Join(l.Dir, "lbd-remote-cache")
	asSA := func(args ...string) (string, error) {
		a := append([]string{"--kubeconfig", saKubeconfig, "--cache-dir", cacheDir}, args...)
		return l.Run(ctx, l.MasterNS, kubectlBin, a...)
	}

	// kubeconfig.sh --secret reads a token Secret's token. No token
	// controller runs in the lab, so the admin fills one in by hand.
	tok, err := l.Kubectl(ctx, "", "create", "token", "lbd", "-n", "lbd-system", "--duration", "1h")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Kubectl(ctx, "", "create", "secret", "generic", "lbd-token", "-n", "lbd-system", "--from-literal=token="+strings.TrimSpace(tok)); err != nil {
		t.Fatal(err)
	}
	gen = l.Command(ctx, l.MasterNS, "/bin/sh", script, "--secret", "lbd-token")
	gen.Env = append(os.Environ(), "KUBECTL="+l.KubectlRemote)
	genErr.Reset()
	gen.Stderr = &genErr
	kc2, err := gen.Output()
	if err != nil {
		t.Fatalf("kubeconfig.sh --secret: %v: %s", err, genErr.String())
	}
	secretKubeconfig := filepath.Join(l.Dir, "secret.kubeconfig")
	if err := os.WriteFile(secretKubeconfig, kc2, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := l.Run(ctx, l.MasterNS, kubectlBin, "--kubeconfig", secretKubeconfig, "--cache-dir", cacheDir, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"); err != nil || out != "system:serviceaccount:lbd-system:lbd" {
		t.Errorf("the kubeconfig of kubeconfig.sh --secret is not the ServiceAccount's: %v %q", err, out)
	}

	web := lab.ServiceSpec{Name: "lb-web", LoadBalancer: true, Ports: []lab.ServicePort{{Port: 80}}, Ready: l.PodIPs}
	if err := l.Apply(ctx, lab.ServiceManifest(web)); err != nil {
		t.Fatal(err)
	}

	// (3) The ServiceAccount directly: reads what lbd reads, and nothing
	// else; writes nothing but status.
	if out, err := asSA("get", "services,endpointslices.discovery.k8s.io", "--all-namespaces", "-o", "name"); err != nil || !strings.Contains(out, "service/lb-web") {
		t.Errorf("the ServiceAccount cannot list services and endpointslices: %v\n%s", err, out)
	}
	forbidden := [][]string{
		{"get", "secrets", "--all-namespaces"},
		{"get", "configmaps", "-n", "kube-system"},
		{"delete", "service", "lb-web"},
		{"patch", "service", "lb-web", "--type=merge", "-p", `{"spec":{"externalIPs":["192.168.121.9"]}}`},
		{"label", "service", "lb-web", "owned=yes"},
		{"create", "namespace", "lpriv-evil"},
		{"create", "token", "default", "-n", "default"},
	}
	for _, args := range forbidden {
		out, err := asSA(args...)
		// kubectl says "Forbidden" or "is forbidden", by verb.
		if err == nil || !strings.Contains(strings.ToLower(out), "forbidden") {
			t.Errorf("kubectl %s as the ServiceAccount: want Forbidden, got %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if _, err := l.Kubectl(ctx, "", "get", "service", "lb-web"); err != nil {
		t.Errorf("lb-web is gone after the ServiceAccount's forbidden delete: %v", err)
	}

	// The forced-command key, as the install guide writes it, and one
	// with no-pty to show why the guide does not set it.
	remote := fmt.Sprintf("%s --kubectl=%s --kubeconfig=%s --cache-dir=%s", filepath.Join(bin, "lbd-remote"), kubectlBin, saKubeconfig, cacheDir)
	key, err := l.AddAuthorizedKey(ctx, "lbd-remote", `restrict,pty,command="`+remote+`"`)
	if err != nil {
		t.Fatal(err)
	}
	noPTYKey, err := l.AddAuthorizedKey(ctx, "lbd-remote-nopty", `restrict,command="`+remote+`"`)
	if err != nil {
		t.Fatal(err)
	}

	// (2) Through the wrapper: lbd's own command runs, anything else is
	// refused with the reason.
	out, stderr, code := sshRun(t, l, key, "kubectl get services,endpointslices.discovery.k8s.io --all-namespaces -o json --request-timeout=10s")
	if code != 0 || !strings.Contains(out, `"lb-web"`) {
		t.Errorf("lbd's discovery command through lbd-remote: exit %d, stderr %q", code, stderr)
	}
	refused := []struct{ cmd, want string }{
		{"kubectl get secrets -A", `lbd-remote: refused: "kubectl get secrets -A": not one of the kubectl commands lbd sends`},
		{"id", `lbd-remote: refused: "id": not a kubectl command lbd sends`},
		{"", "lbd-remote: refused: no command"},
		{"kubectl get services --all-namespaces --watch -o name; id", "not one of the kubectl commands lbd sends"},
		{"kubectl --kubeconfig=" + l.Kubeconfig + " get services --all-namespaces --watch -o name", "not one of the kubectl commands lbd sends"},
		{"kubectl get services,endpointslices.discovery.k8s.io --all-namespaces -o json --request-timeout=$(id)s", "not one of the kubectl commands lbd sends"},
	}
	for _, r := range refused {
		out, stderr, code := sshRun(t, l, key, r.cmd)
		if code != 126 || !strings.Contains(stderr, r.want) || strings.Contains(out, "uid=") {
			t.Errorf("ssh %q through lbd-remote: exit %d, stdout %q, stderr %q; want exit 126 and %q", r.cmd, code, out, stderr, r.want)
		}
	}
	if _, stderr, _ := sshRun(t, l, noPTYKey, "kubectl get services --all-namespaces --watch -o name", "-tt"); !strings.Contains(stderr, "PTY allocation request failed") {
		t.Errorf("a no-pty key granted lbd's watch a terminal: %q", stderr)
	}

	// (1) lbd through the wrapper: a sync discovers lb-web and writes its
	// status; lbd run's watch sees a new service and writes its status.
	db := filepath.Join(t.TempDir(), "lbd.db")
	lbdArgs := func(args ...string) []string {
		base := []string{filepath.Join(bin, "lbd"),
			"--master", l.Master, "--ssh-key", key, "--known-hosts", l.KnownHosts,
			"--kubectl", "kubectl", "--db", db, "--log-file", filepath.Join(filepath.Dir(db), "lbd.log"),
			"--ssh-timeout", "3s", "--kubectl-timeout", "20s", "--lock-wait", "5s", "--pool", pool,
			"--backend=iptables", "--vip-interface=eth0"}
		return append(base, args...)
	}
	t.Cleanup(func() {
		out, err := runLBD(l, lbdArgs("cleanup"))
		if err != nil {
			t.Errorf("lbd cleanup: %v\n%s", err, out)
		}
	})
	if out, err := runLBD(l, lbdArgs()); err != nil {
		t.Fatalf("lbd sync through lbd-remote: %v\n%s", err, out)
	}
	ip := ingressIP(t, l, "lb-web")
	if ip != "192.168.121.250" && ip != "192.168.121.251" {
		t.Fatalf("lb-web's status after a sync through lbd-remote: ingress %q, want an address of %s", ip, pool)
	}

	p, err := l.Spawn("lbd-run", l.LBNS, lbdArgs("--metrics-addr", metricsAddr, "run")...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("tail of lbd run:\n%s", p.Tail(40))
		}
		p.Stop()
	})
	lab.WaitFor(t, 30*time.Second, "lbd run's watch through lbd-remote to be up", func() bool {
		return strings.Contains(metrics(l), "\nlbd_watch_up 1\n")
	})
	two := lab.ServiceSpec{Name: "lb-two", LoadBalancer: true, Ports: []lab.ServicePort{{Port: 80}}, Ready: l.PodIPs[:1]}
	if err := l.Apply(ctx, lab.ServiceManifest(two)); err != nil {
		t.Fatal(err)
	}
	// The resync is 5 minutes away: only the watch can bring lb-two in.
	lab.WaitFor(t, 30*time.Second, "lb-two's status from lbd run through lbd-remote", func() bool {
		got := ingressIP(t, l, "lb-two")
		return got != "" && got != ip
	})
	if m := metrics(l); !strings.Contains(m, "\nlbd_watch_up 1\n") {
		t.Errorf("the watch went down:\n%s", m)
	}
}

// buildBinaries builds lbd and lbd-remote into a temporary directory and
// returns it.
func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/lbd/lbd/cmd/lbd", "github.com/lbd/lbd/cmd/lbd-remote")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// sshRun runs OpenSSH's client in the LB namespace with key alone, as root
// on the master, asking for cmd ("" asks for none), and returns stdout,
// stderr and the exit status. extra goes before the host.
func sshRun(t *testing.T, l *lab.Lab, key, cmd string, extra ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	args := []string{"-F", "/dev/null", "-i", key, "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
		"-o", "UserKnownHostsFile=" + l.KnownHosts, "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=5"}
	args = append(args, extra...)
	args = append(args, "root@"+l.MasterIP.String())
	if cmd != "" {
		args = append(args, cmd)
	}
	c := l.Command(ctx, l.LBNS, "ssh", args...)
	c.Stdin = strings.NewReader("")
	var stdout, stderr strings.Builder
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("ssh %q: %v", cmd, err)
	}
	return stdout.String(), stderr.String(), code
}

// runLBD runs lbd with argv in the LB namespace and returns its combined
// output.
func runLBD(l *lab.Lab, argv []string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return l.Run(ctx, l.LBNS, argv[0], argv[1:]...)
}

// ingressIP is status.loadBalancer.ingress[*].ip of a default-namespace
// service, as the lab's admin reads it.
func ingressIP(t *testing.T, l *lab.Lab, name string) string {
	t.Helper()
	out, err := l.Kubectl(t.Context(), "", "get", "service", name, "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// metrics returns lbd run's /metrics text, or "" while it does not answer.
func metrics(l *lab.Lab) string {
	resp, err := l.HTTPClient(l.LBNS).Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return "\n" + string(b)
}
