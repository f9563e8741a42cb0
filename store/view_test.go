package store_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/lbd/lbd/lb"
)

// sqlite3CLI is Debian 12's sqlite3 shell (3.40), the tool the notes use to
// look at the table.
const sqlite3CLI = "/usr/bin/sqlite3"

func needSQLite3(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(sqlite3CLI); err != nil {
		t.Skipf("SKIPPING: %s not installed (apt-get install sqlite3): %v", sqlite3CLI, err)
	}
}

// dual serves the same pods on 80/TCP and 80/UDP: each ip:port once.
func dual() lb.Service {
	return lb.Service{
		Namespace: "default", Name: "dual", Type: "LoadBalancer",
		ClusterIP: ip("10.247.9.9"), ExternalIPs: ips("192.168.121.209"), Affinity: lb.AffinityNone,
		Ports: []lb.Port{
			{Name: "udp", Port: 80, Protocol: lb.UDP, TargetPort: "80", Endpoints: []lb.Endpoint{
				ep("10.246.82.8", 80, true), ep("10.246.82.7", 80, true),
			}},
			{Name: "tcp", Port: 80, Protocol: lb.TCP, TargetPort: "80", Endpoints: []lb.Endpoint{
				ep("10.246.82.8", 80, true), ep("10.246.82.7", 80, true), ep("10.246.82.11", 80, true),
			}},
		},
	}
}

func TestViewWithSQLite3CLI(t *testing.T) {
	needSQLite3(t)
	ctx := context.Background()
	db, path := openTemp(t)
	svcs := []lb.Service{web(), nginx(), dns6(), headless(), kubernetes(), dual()}
	if err := db.Commit(ctx, "iptables", svcs, nil, record("iptables", len(svcs), t0)); err != nil {
		t.Fatal(err)
	}

	want := []string{
		"ServiceName|NameSpace|ClusterIP|ExternalIP|Ports|EndPoints",
		"dual|default|10.247.9.9|192.168.121.209|80/TCP,80/UDP|10.246.82.7:80,10.246.82.8:80,10.246.82.11:80",
		"headless|default||||",
		"kubernetes|default|10.247.0.1||443/TCP|10.245.1.2:6443",
		"nginx|default|10.247.78.179|192.168.121.201|80/TCP|10.246.82.2:80,10.246.82.6:80",
		"dns6|kube-system|fd00:10:96::a|2001:db8::53|53/TCP,53/UDP|[fd00:10:244::2]:53,[fd00:10:244::3]:53",
		"web|shop|10.247.5.5|192.168.121.202,192.168.121.210|80/TCP,443/TCP|" +
			"10.246.82.2:8080,10.246.82.10:8080,10.246.82.2:8443,10.246.82.10:8443",
	}
	// The view says what lb says about each service.
	for i, s := range normalized(svcs...) {
		ci := ""
		if s.ClusterIP.IsValid() {
			ci = s.ClusterIP.String()
		}
		line := strings.Join([]string{s.Name, s.Namespace, ci, s.ExternalIPsString(), s.PortsString(), s.EndpointsString()}, "|")
		if line != want[i+1] {
			t.Errorf("lb's strings for %s = %q, test expects %q", s.Key(), line, want[i+1])
		}
	}

	run := func(when string) {
		t.Helper()
		out, err := exec.CommandContext(ctx, sqlite3CLI, "-header", path, "select * from ServiceToEndPointsMapping").CombinedOutput()
		if err != nil {
			t.Fatalf("%s: sqlite3: %v\n%s", when, err, out)
		}
		got := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s: sqlite3 %s 'select * from ServiceToEndPointsMapping' (-want +got):\n%s", when, path, diff)
		}
	}
	run("while lbd has it open")
	db.Close()
	run("after close")
}

// The notes' own query, in the notes' own case.
func TestViewNotesQueryWithSQLite3CLI(t *testing.T) {
	needSQLite3(t)
	ctx := context.Background()
	db, path := openTemp(t)
	if err := db.Commit(ctx, "haproxy", []lb.Service{nginx()}, nil, record("haproxy", 1, t0)); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, sqlite3CLI, path, "select * from servicetoendpointsmapping;").CombinedOutput()
	if err != nil {
		t.Fatalf("sqlite3: %v\n%s", err, out)
	}
	const want = "nginx|default|10.247.78.179|192.168.121.201|80/TCP|10.246.82.2:80,10.246.82.6:80\n"
	if string(out) != want {
		t.Errorf("sqlite3 output = %q, want %q", out, want)
	}
}
