package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lbd/lbd/hack/lab"
	"github.com/lbd/lbd/lb"
)

// The end-to-end tests run the real lbd binary in the lab's LB namespace
// against a real kube-apiserver reached over real SSH. One lab serves the
// whole package (TestMain closes it); each test uses its own database.

var (
	labOnce sync.Once
	theLab  *lab.Lab
	labErr  error
	lbdBin  string
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if theLab != nil {
		theLab.Close()
	}
	if lbdBin != "" {
		os.RemoveAll(filepath.Dir(lbdBin))
	}
	os.Exit(code)
}

// e2eLab returns the shared lab with a cluster and the lbd binary, starting
// them on first use. It skips when not root or with -short.
func e2eLab(t testing.TB) *lab.Lab {
	t.Helper()
	lab.RequireRoot(t)
	labOnce.Do(func() {
		dir, err := os.MkdirTemp("", "lbd-e2e-bin")
		if err != nil {
			labErr = err
			return
		}
		lbdBin = filepath.Join(dir, "lbd")
		if out, err := exec.Command("go", "build", "-o", lbdBin, ".").CombinedOutput(); err != nil {
			labErr = fmt.Errorf("build lbd: %v\n%s", err, out)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		theLab, labErr = lab.Start(ctx, lab.Options{Name: "e2e", Cluster: true})
		if labErr == nil {
			labErr = theLab.StartPods(ctx)
		}
	})
	if labErr != nil {
		t.Fatalf("lab: %v", labErr)
	}
	return theLab
}

// lbdRun runs the lbd binary in the LB namespace with the lab's master,
// key and known_hosts, plus args. It returns stdout, stderr and the exit
// code.
func lbdRun(t testing.TB, l *lab.Lab, db string, args ...string) (string, string, int) {
	t.Helper()
	return lbdRunPool(t, l, db, labPool, args...)
}

// lbdRunPool is lbdRun with another --pool; "" gives none.
func lbdRunPool(t testing.TB, l *lab.Lab, db, pool string, args ...string) (string, string, int) {
	t.Helper()
	return lbdRunWith(t, l, lbdBin, nil, db, pool, args...)
}

// lbdRunWith is lbdRunPool with another lbd binary and extra environment
// variables; a process killed by a signal returns code -1.
func lbdRunWith(t testing.TB, l *lab.Lab, bin string, env []string, db, pool string, args ...string) (string, string, int) {
	t.Helper()
	// Not t.Context(): lbdRun also runs from t.Cleanup, after it is done.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base := []string{
		"--master", l.Master, "--ssh-key", l.SSHKey, "--known-hosts", l.KnownHosts,
		"--kubectl", l.KubectlRemote, "--db", db, "--log-file", filepath.Join(filepath.Dir(db), "lbd.log"),
		"--ssh-timeout", "3s", "--kubectl-timeout", "20s", "--lock-wait", "5s",
	}
	if pool != "" {
		base = append(base, "--pool", pool)
	}
	cmd := l.Command(ctx, l.LBNS, bin, append(base, args...)...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run lbd %v: %v", args, err)
	}
	t.Logf("lbd %s -> exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return stdout.String(), stderr.String(), code
}

// labPool is the address pool of the end-to-end tests: the lab's
// external addresses that the manifests use as externalIPs, and
// lbPool's range for LoadBalancer services.
const labPool = "192.168.121.200-192.168.121.239,192.168.121.240/28"

// manifests are the services of the core end-to-end test: the notes'
// nginx (one endpoint not ready), a two-port service with a named target
// port, a service with no external IP, and one in a second namespace. No
// controller-manager runs in the lab, so Endpoints and EndpointSlices are
// written by hand, as the controllers would.
const manifests = `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Service
metadata: {name: nginx, namespace: default}
spec:
  externalIPs: [192.168.121.201]
  ports: [{port: 80, protocol: TCP, targetPort: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: nginx-1, namespace: default, labels: {kubernetes.io/service-name: nginx}}
addressType: IPv4
ports: [{name: "", port: 80, protocol: TCP}]
endpoints:
- {addresses: [10.246.82.2], conditions: {ready: true}}
- {addresses: [10.246.82.6], conditions: {ready: true}}
- {addresses: [10.246.92.8], conditions: {ready: false}}
---
apiVersion: v1
kind: Service
metadata: {name: multi, namespace: default}
spec:
  externalIPs: [192.168.121.201]
  ports:
  - {name: http, port: 8080, protocol: TCP, targetPort: web}
  - {name: https, port: 8443, protocol: TCP, targetPort: 8443}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: multi-1, namespace: default, labels: {kubernetes.io/service-name: multi}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}, {name: https, port: 8443, protocol: TCP}]
endpoints:
- {addresses: [10.246.82.2], conditions: {ready: true}}
- {addresses: [10.246.92.8], conditions: {ready: true}}
---
apiVersion: v1
kind: Service
metadata: {name: internal, namespace: default}
spec:
  ports: [{port: 5432, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: internal-1, namespace: default, labels: {kubernetes.io/service-name: internal}}
addressType: IPv4
ports: [{name: "", port: 5432, protocol: TCP}]
endpoints:
- {addresses: [10.246.82.6], conditions: {ready: true}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  externalIPs: [192.168.121.201]
  ports: [{port: 81, protocol: TCP, targetPort: 80}]
  sessionAffinity: ClientIP
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: "", port: 80, protocol: TCP}]
endpoints:
- {addresses: [10.246.92.8], conditions: {ready: true}}
`

// TestCoreEndToEnd walks the core issue's story on the real lab: store,
// status, the view, plan after changes, a dead sshd and a wrong host key.
func TestCoreEndToEnd(t *testing.T) {
	l := e2eLab(t)
	ctx := t.Context()
	// The objects go, the namespace stays: without a controller manager
	// in the lab a deleted namespace never finishes terminating, and a
	// later apply into it would fail.
	t.Cleanup(func() {
		ctx := context.Background()
		l.Kubectl(ctx, "", "delete", "-n", "default", "--ignore-not-found", "service/nginx", "service/multi", "service/internal",
			"endpointslice/nginx-1", "endpointslice/multi-1", "endpointslice/internal-1")
		l.Kubectl(ctx, "", "delete", "-n", "shop", "--ignore-not-found", "service/web", "endpointslice/web-1")
	})
	if err := l.Apply(ctx, manifests); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(t.TempDir(), "LoadBalancer.sqlite.db")
	// lbd's own ruleset goes away after the test; the lab's LB namespace
	// is shared with the other tests.
	t.Cleanup(func() { lbdRun(t, l, db, "--backend=iptables", "cleanup") })

	// First pass stores everything and programs the exposed services.
	if _, stderr, code := lbdRun(t, l, db, "--backend=iptables"); code != 0 {
		t.Fatalf("first sync exit %d: %s", code, stderr)
	}
	if fi, err := os.Stat(db); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("database %s mode: %v %v, want no group/other access", db, fi.Mode(), err)
	}

	// status shows every service, the unexposed one as <none>.
	out, _, code := lbdRun(t, l, db, "status")
	if code != 0 {
		t.Fatalf("status exit %d", code)
	}
	for _, want := range []string{
		"nginx", "10.246.82.2:80,10.246.82.6:80", "multi", "8080/TCP,8443/TCP",
		"10.246.82.2:8080,10.246.92.8:8080,10.246.82.2:8443,10.246.92.8:8443",
		"internal", "<none>", "web", "shop", "last sync:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q", want)
		}
	}
	var st struct {
		Services []lb.Service `json:"services"`
	}
	out, _, _ = lbdRun(t, l, db, "status", "-o", "json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status -o json: %v", err)
	}
	svcs := st.Services
	if got := keysOf(svcs); !equalSets(got, []string{"default/internal", "default/kubernetes", "default/multi", "default/nginx", "shop/web"}) {
		t.Errorf("stored services = %v", got)
	}

	// The notes' query works in the real sqlite3 CLI.
	view, err := exec.CommandContext(ctx, "sqlite3", db, "select * from ServiceToEndPointsMapping where NameSpace != 'default' or ServiceName = 'nginx' order by ServiceName").CombinedOutput()
	if err != nil {
		t.Fatalf("sqlite3: %v\n%s", err, view)
	}
	clusterIP := strings.TrimSpace(mustKubectl(t, l, "get", "svc", "nginx", "-o", "jsonpath={.spec.clusterIP}"))
	wantView := "nginx|default|" + clusterIP + "|192.168.121.201|80/TCP|10.246.82.2:80,10.246.82.6:80\n"
	if !strings.HasPrefix(string(view), wantView) || !strings.Contains(string(view), "web|shop|") {
		t.Errorf("view:\n%s\nwant first line %q and shop/web", view, wantView)
	}

	// The preflight: one verdict per line, from the real host, master and
	// routes of the LB namespace.
	out, _, _ = lbdRun(t, l, db, "--backend=iptables", "check")
	for _, want := range []string{"ok   root:", "ok   iptables:", "ok   ip_forward: 1", "ok   ssh: root@10.245.1.10", "host key verified",
		"ok   kubectl: 5 services, 0 rejected", "ok   pod route: endpoint 10.246.82.2 routes via flannel0", "ok   pod route: endpoint 10.246.92.8 routes via flannel0"} {
		if !strings.Contains(out, want) {
			t.Errorf("lbd check lacks %q", want)
		}
	}
	// Pods that do not route through --pod-interface fail it, by IP.
	out, _, code = lbdRun(t, l, db, "--backend=iptables", "--pod-interface=ens9", "check")
	if code != 1 || !strings.Contains(out, "FAIL pod route: endpoint 10.246.82.2 routes via flannel0, not ens9") || !strings.Contains(out, "flannel0") {
		t.Errorf("check with the wrong pod interface: exit %d, want 1 and a FAIL line naming the route via flannel0", code)
	}

	// Nothing changed: plan exits 0.
	if out, _, code := lbdRun(t, l, db, "--backend=iptables", "plan"); code != 0 {
		t.Fatalf("plan after sync: exit %d, want 0:\n%s", code, out)
	}

	// An endpoint goes and a service is deleted: plan shows both, exit 2.
	mustKubectl(t, l, "delete", "service", "web", "-n", "shop")
	mustKubectl(t, l, "patch", "endpointslice", "nginx-1", "--type=json", "-p", `[{"op":"remove","path":"/endpoints/1"}]`)
	out, _, code = lbdRun(t, l, db, "--backend=iptables", "plan")
	if code != 2 {
		t.Errorf("plan with changes: exit %d, want 2", code)
	}
	for _, want := range []string{"update default/nginx", "endpoints of 80/TCP -10.246.82.6:80", "delete shop/web", "1 to update, 1 to delete"} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q", want)
		}
	}
	before, _, _ := lbdRun(t, l, db, "status", "-o", "json")

	// sshd stopped: non-zero exit, and the store is unchanged.
	if err := l.StopSSHD(); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := lbdRun(t, l, db, "--backend=iptables")
	if err := l.StartSSHD(ctx); err != nil {
		t.Fatal(err)
	}
	if code == 0 || !strings.Contains(stderr, "10.245.1.10") {
		t.Errorf("sync with sshd down: exit %d, stderr %q; want non-zero naming the master", code, stderr)
	}
	if after, _, _ := lbdRun(t, l, db, "status", "-o", "json"); after != before {
		t.Errorf("store changed although discovery failed:\nbefore %s\nafter %s", before, after)
	}

	// A wrong host key is refused with the key's fingerprint.
	wrong := filepath.Join(t.TempDir(), "known_hosts")
	otherKey := filepath.Join(t.TempDir(), "other")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", otherKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	pub, _ := os.ReadFile(otherKey + ".pub")
	os.WriteFile(wrong, []byte("10.245.1.10 "+string(pub)), 0o600)
	_, stderr, code = lbdRun(t, l, db, "--backend=iptables", "--known-hosts", wrong)
	if code == 0 || !strings.Contains(stderr, "SHA256:") || !strings.Contains(strings.ToLower(stderr), "changed") {
		t.Errorf("sync with a wrong host key: exit %d, stderr %q; want refusal with fingerprint", code, stderr)
	}
	if after, _, _ := lbdRun(t, l, db, "status", "-o", "json"); after != before {
		t.Error("store changed although the host key was wrong")
	}

	// Back to normal: the pending changes are applied.
	if _, stderr, code := lbdRun(t, l, db, "--backend=iptables"); code != 0 {
		t.Fatalf("sync after recovery: exit %d: %s", code, stderr)
	}
	if out, _, code := lbdRun(t, l, db, "--backend=iptables", "plan"); code != 0 {
		t.Errorf("plan after recovery: exit %d\n%s", code, out)
	}
}

func mustKubectl(t *testing.T, l *lab.Lab, args ...string) string {
	t.Helper()
	// Not t.Context(): this also runs from t.Cleanup.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := l.Kubectl(ctx, "", args...)
	if err != nil {
		t.Fatalf("kubectl %v: %v\n%s", args, err, out)
	}
	return out
}

func keysOf(svcs []lb.Service) []string {
	var out []string
	for _, s := range svcs {
		out = append(out, s.Key())
	}
	return out
}

func equalSets(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, x := range a {
		m[x]++
	}
	for _, x := range b {
		if m[x]--; m[x] < 0 {
			return false
		}
	}
	return true
}
