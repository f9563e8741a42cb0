package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/lbd/lbd/internal/testkit"
)

func TestServiceManifest(t *testing.T) {
	got := ServiceManifest(ServiceSpec{
		Namespace:   "shop",
		Name:        "web",
		ExternalIPs: []netip.Addr{LBExternalIP, netip.MustParseAddr("192.168.121.202")},
		Ports: []ServicePort{
			{Name: "http", Port: 80, TargetPort: 8080},
			{Name: "dns", Port: 53, TargetPort: 5353, Protocol: "UDP"},
		},
		Ready:       []netip.Addr{podIP(0), podIP(1)},
		NotReady:    []netip.Addr{podIP(2)},
		Annotations: map[string]string{"lbd/mode": "haproxy"},
	})
	testkit.Golden(t, []byte(got))
}

// TestCluster starts the real master and reads a Service back the way lbd
// will: ssh from the load balancer to the master, kubectl there.
func TestCluster(t *testing.T) {
	start := time.Now()
	l := ForTest(t, Options{Name: testName, Cluster: true, Pods: 3})
	t.Logf("cluster lab up in %s", time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	start = time.Now()
	err := l.Apply(ctx, ServiceManifest(ServiceSpec{
		Namespace:   "shop",
		Name:        "web",
		ExternalIPs: []netip.Addr{l.LBExternalIP},
		Ports:       []ServicePort{{Name: "http", Port: 80}, {Name: "dns", Port: 5353, Protocol: "UDP"}},
		Ready:       l.PodIPs[:2],
		NotReady:    l.PodIPs[2:],
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("apply took %s", time.Since(start).Round(time.Millisecond))

	ssh := func(remote string) (string, error) {
		cmd := l.Command(ctx, l.LBNS, "ssh", "-F", "/dev/null", "-i", l.SSHKey,
			"-o", "UserKnownHostsFile="+l.KnownHosts, "-o", "StrictHostKeyChecking=yes",
			"-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "root@"+l.MasterIP.String(), remote)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return string(out), &sshError{err, stderr.String()}
		}
		return string(out), nil
	}

	start = time.Now()
	out, err := ssh(l.KubectlRemote + " get svc -A -o json")
	if err != nil {
		t.Fatalf("kubectl over ssh: %v", err)
	}
	t.Logf("ssh + kubectl get svc took %s", time.Since(start).Round(time.Millisecond))
	var list struct {
		Items []struct {
			Metadata struct{ Namespace, Name string }
			Spec     struct {
				ExternalIPs []string `json:"externalIPs"`
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("kubectl output: %v\n%s", err, out)
	}
	got := map[string][]string{}
	for _, it := range list.Items {
		got[it.Metadata.Namespace+"/"+it.Metadata.Name] = it.Spec.ExternalIPs
	}
	want := map[string][]string{"default/kubernetes": nil, "shop/web": {"192.168.121.201"}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("services over ssh (-want +got):\n%s", d)
	}

	out, err = ssh(l.KubectlRemote + " get endpointslices -n shop -l kubernetes.io/service-name=web -o jsonpath={.items[*].endpoints[*].addresses[0]}")
	if err != nil {
		t.Fatalf("kubectl over ssh: %v", err)
	}
	if d := cmp.Diff("10.246.82.2 10.246.82.6 10.246.92.8", out); d != "" {
		t.Errorf("endpoint slice addresses (-want +got):\n%s", d)
	}

	// Root's sessions on the master see an empty home of their own, not
	// the host's dotfiles, and the host's home keeps them.
	home, err := rootHome()
	if err != nil {
		t.Fatal(err)
	}
	out, err = ssh(`printf '%s|' "$HOME"; ls -A "$HOME"`)
	if err != nil {
		t.Fatalf("ssh: %v", err)
	}
	if d := cmp.Diff(home+"|", out); d != "" {
		t.Errorf("root's home on the master (-want +got):\n%s", d)
	}
	if mounts, err := os.ReadFile("/proc/self/mountinfo"); err != nil || strings.Contains(string(mounts), "lbd-lab-home") {
		t.Errorf("the master's home is mounted in the host's mount namespace (or mountinfo unreadable: %v)", err)
	}

	// A command left running by a session goes with sshd.
	sleeper := exec.Command("ip", "netns", "exec", l.LBNS, "ssh", "-F", "/dev/null", "-i", l.SSHKey,
		"-o", "UserKnownHostsFile="+l.KnownHosts, "-o", "BatchMode=yes", "root@"+l.MasterIP.String(), "exec sleep 120")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	WaitFor(t, 10*time.Second, "sleep 120 on the master", func() bool { return len(masterPids(t, l, "sleep")) == 1 })

	// sshd down: lbd's view of the master must fail; back up: same host
	// key, so strict host key checking passes again.
	if err := l.StopSSHD(); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 10*time.Second, "the session's sleep to die with sshd", func() bool { return len(masterPids(t, l, "sleep")) == 0 })
	if _, err := ssh("true"); err == nil {
		t.Error("ssh succeeded with sshd stopped")
	}
	if err := l.StartSSHD(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ssh("true"); err != nil {
		t.Errorf("ssh after StartSSHD: %v", err)
	}
}

type sshError struct {
	err    error
	stderr string
}

func (e *sshError) Error() string { return e.err.Error() + ": " + strings.TrimSpace(e.stderr) }
func (e *sshError) Unwrap() error { return e.err }

// masterPids returns the pids in the master namespace whose command name
// is comm.
func masterPids(t *testing.T, l *Lab, comm string) []int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "pids", l.MasterNS).CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns pids: %v: %s", err, out)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		pid, _ := strconv.Atoi(f)
		if c, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(c)) == comm {
			pids = append(pids, pid)
		}
	}
	return pids
}
