package haproxy

import (
	"bytes"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/internal/testkit"
	"github.com/lbd/lbd/lb"
)

// golden is testkit.Golden.
func golden(t *testing.T, got []byte) {
	t.Helper()
	testkit.Golden(t, got)
}

// haproxyCheck validates base and files with the real "haproxy -c". It
// skips loudly when haproxy is not installed.
func haproxyCheck(t *testing.T, base []byte, files Files) {
	t.Helper()
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skipf("SKIP haproxy -c: haproxy is not installed: %v", err)
	}
	dir := t.TempDir()
	svc := filepath.Join(dir, "services.d")
	if err := os.Mkdir(svc, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "base.cfg"), base, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(svc, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"-c", "-f", filepath.Join(dir, "base.cfg"), "-f", svc}
	if p, ok := files[PeersFile]; ok {
		// haproxy's local peer must be the one the peers file names.
		_, after, _ := strings.Cut(string(p), "\n    peer ")
		args = append(args, "-L", strings.Fields(after)[0])
	}
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Errorf("haproxy -c rejects the rendered configuration: %v\n%s", err, out)
	}
	if bytes.Contains(out, []byte("[WARNING]")) {
		t.Errorf("haproxy -c warns about the rendered configuration:\n%s", out)
	}
}

// concat joins files in load order, each under a "=== name" line.
func concat(f Files) []byte {
	var b bytes.Buffer
	for _, name := range f.Names() {
		b.WriteString("=== " + name + "\n")
		b.Write(f[name])
	}
	return b.Bytes()
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func ep(addr string, port uint16, ready bool) lb.Endpoint {
	return lb.Endpoint{IP: ip(addr), Port: port, Ready: ready, Serving: ready}
}

// nginx is the notes' service: default/nginx on 192.168.121.201:80 with
// the lab's three pods, one of them not ready.
func nginx() lb.Service {
	return lb.Service{
		Namespace: "default", Name: "nginx", Type: "ClusterIP",
		ClusterIP:   ip("10.247.78.179"),
		ExternalIPs: []netip.Addr{ip("192.168.121.201")},
		Ports: []lb.Port{{Port: 80, Protocol: lb.TCP, TargetPort: "80", Endpoints: []lb.Endpoint{
			ep("10.246.82.2", 80, true), ep("10.246.82.6", 80, true), ep("10.246.92.8", 80, false),
		}}},
		Affinity: lb.AffinityNone,
	}
}

func testOptions(dir string) Options {
	return Options{
		BasePath:     filepath.Join(dir, "haproxy-global-default.cfg"),
		Dir:          filepath.Join(dir, "services.d"),
		MasterSocket: filepath.Join(dir, "master.sock"),
		StatsSocket:  filepath.Join(dir, "admin.sock"),
	}
}

func TestRender(t *testing.T) {
	long := strings.Repeat("a", 62) + "z" // 63 characters, the longest label
	tests := []struct {
		name string
		svcs []lb.Service
		opts Options
	}{
		{name: "nginx", svcs: []lb.Service{nginx()}},
		{name: "source-ranges", svcs: []lb.Service{func() lb.Service {
			s := nginx()
			s.SourceRanges = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("192.168.121.0/28")}
			return s
		}()}},
		{
			name: "multiport-affinity",
			svcs: []lb.Service{{
				Namespace: "shop", Name: "web", Type: "LoadBalancer",
				ExternalIPs: []netip.Addr{ip("192.168.121.201"), ip("192.168.121.202")},
				Ports: []lb.Port{
					{Name: "http", Port: 80, Protocol: lb.TCP, TargetPort: "8080", Endpoints: []lb.Endpoint{ep("10.246.82.2", 8080, true), ep("10.246.82.6", 8080, true)}},
					{Name: "https", Port: 443, Protocol: lb.TCP, TargetPort: "https", Endpoints: []lb.Endpoint{ep("10.246.82.2", 8443, true), ep("10.246.82.6", 8443, true)}},
				},
				Affinity: lb.AffinityClientIP, AffinityTimeout: lb.DefaultAffinityTimeout,
			}},
			opts: Options{CheckInterval: 500 * time.Millisecond, Fall: 2, Rise: 1, PeerName: "lb1"},
		},
		{
			name: "udp",
			svcs: []lb.Service{
				{ // mixed: the TCP port is served, the UDP one listed
					Namespace: "kube-system", Name: "dns", ExternalIPs: []netip.Addr{ip("192.168.121.210")},
					Ports: []lb.Port{
						{Name: "dns", Port: 53, Protocol: lb.UDP, Endpoints: []lb.Endpoint{ep("10.246.82.9", 53, true)}},
						{Name: "dns-tcp", Port: 53, Protocol: lb.TCP, Endpoints: []lb.Endpoint{ep("10.246.82.9", 53, true)}},
						{Name: "sctp", Port: 9, Protocol: lb.SCTP, Endpoints: []lb.Endpoint{ep("10.246.82.9", 9, true)}},
					},
					Affinity: lb.AffinityNone,
				},
				{ // UDP only: no file
					Namespace: "default", Name: "syslog", ExternalIPs: []netip.Addr{ip("192.168.121.211")},
					Ports:    []lb.Port{{Port: 514, Protocol: lb.UDP, Endpoints: []lb.Endpoint{ep("10.246.82.2", 514, true)}}},
					Affinity: lb.AffinityNone,
				},
				{ // not exposed: no file
					Namespace: "default", Name: "internal",
					Ports:    []lb.Port{{Port: 80, Protocol: lb.TCP, Endpoints: []lb.Endpoint{ep("10.246.82.2", 80, true)}}},
					Affinity: lb.AffinityNone,
				},
			},
		},
		{
			name: "no-ready-endpoints",
			svcs: []lb.Service{{
				Namespace: "default", Name: "down", ExternalIPs: []netip.Addr{ip("192.168.121.201")},
				Ports:    []lb.Port{{Port: 8080, Protocol: lb.TCP, Endpoints: []lb.Endpoint{ep("10.246.82.2", 8080, false)}}},
				Affinity: lb.AffinityNone,
			}},
		},
		{
			name: "ipv6",
			svcs: []lb.Service{{
				Namespace: "default", Name: "dual", ExternalIPs: []netip.Addr{ip("192.168.121.201"), ip("2001:db8::201")},
				Ports: []lb.Port{{Port: 80, Protocol: lb.TCP, Endpoints: []lb.Endpoint{
					ep("10.246.82.2", 80, true), ep("fd00:10:246::2", 80, true), ep("::ffff:10.246.82.6", 80, true),
				}}},
				Affinity: lb.AffinityNone,
			}},
		},
		{
			name: "odd-names",
			svcs: []lb.Service{
				{
					Namespace: long, Name: long, ExternalIPs: []netip.Addr{ip("192.168.121.201")},
					Ports:    []lb.Port{{Name: long, Port: 65535, Protocol: lb.TCP, Endpoints: []lb.Endpoint{ep("10.246.82.2", 65535, true)}}},
					Affinity: lb.AffinityNone,
				},
				{ // a namespace may start with a digit; labels may hold "--"
					Namespace: "0-0", Name: "a--0", ExternalIPs: []netip.Addr{ip("192.168.121.201")},
					Ports:    []lb.Port{{Port: 1, Protocol: lb.TCP, Endpoints: []lb.Endpoint{ep("10.246.82.2", 1, true)}}},
					Affinity: lb.AffinityNone,
				},
				{
					Namespace: "0", Name: "a-0", ExternalIPs: []netip.Addr{ip("192.168.121.201")},
					Ports:    []lb.Port{{Port: 1, Protocol: lb.TCP, Endpoints: []lb.Endpoint{ep("10.246.82.2", 1, true)}}},
					Affinity: lb.AffinityNone,
				},
			},
		},
		{name: "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files, err := Render(tt.svcs, tt.opts)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			golden(t, concat(files))
			o := tt.opts
			o.StatsSocket = filepath.Join(t.TempDir(), "admin.sock")
			haproxyCheck(t, RenderBase(o), files)
		})
	}
}

func TestRenderBase(t *testing.T) {
	o := Options{StatsSocket: "/run/haproxy/admin.sock"}
	golden(t, RenderBase(o))
	haproxyCheck(t, RenderBase(o), nil)
}

func TestRenderErrors(t *testing.T) {
	bad := nginx()
	bad.Name = "a\n    bind 0.0.0.0:22"
	tests := []struct {
		name string
		svcs []lb.Service
		want string
	}{
		{name: "duplicate", svcs: []lb.Service{nginx(), nginx()}, want: "render service default/nginx: listed twice"},
		{name: "injection", svcs: []lb.Service{bad}, want: `render service "default"/"a\n    bind 0.0.0.0:22": namespace and name must be RFC 1123 labels`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Render(tt.svcs, Options{})
			if err == nil {
				t.Fatal("Render succeeded, want an error")
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNames(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"file", FileName("default", "nginx"), "default_nginx.cfg"},
		{"proxy", ProxyName(&lb.Service{Namespace: "default", Name: "nginx"}, lb.Port{Port: 80, Protocol: lb.TCP}), "lbd_default_nginx_80_tcp"},
		{"slot", SlotName(3), "s3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, tt.got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestUnserved(t *testing.T) {
	svcs := []lb.Service{
		{Namespace: "a", Name: "dns", ExternalIPs: []netip.Addr{ip("192.168.121.210")}, Ports: []lb.Port{
			{Name: "dns", Port: 53, Protocol: lb.UDP}, {Name: "tcp", Port: 53, Protocol: lb.TCP},
		}},
		{Namespace: "a", Name: "hidden", Ports: []lb.Port{{Port: 53, Protocol: lb.UDP}}},
	}
	want := []lb.Skipped{{Key: "a/dns", Reason: "service a/dns port 53/UDP: haproxy cannot serve UDP; use --backend=iptables"}}
	if diff := cmp.Diff(want, Unserved(svcs)); diff != "" {
		t.Errorf("Unserved (-want +got):\n%s", diff)
	}
}

func TestParseShowProc(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    procState
		wantErr bool
	}{
		{
			name: "after failed reload",
			in: "#<PID>          <type>          <reloads>       <uptime>        <version>      \n" +
				"15000           master          3 [failed: 1]   0d00h00m06s     2.6.12-1+deb12u4\n" +
				"# workers\n15039           worker          1               0d00h00m03s     2.6.12-1+deb12u4\n# programs\n\n",
			want: procState{master: 15000, reloads: 3, failed: 1, workers: []int{15039}},
		},
		{
			name: "two workers",
			in:   "#<PID> <type> <reloads> <uptime> <version>\n1 master 4 [failed: 0] 0d 2.6\n# workers\n7 worker 0 0d 2.6\n# old workers\n5 worker 1 0d 2.6\n",
			want: procState{master: 1, reloads: 4, workers: []int{7, 5}},
		},
		{name: "garbage", in: "Unknown command.\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseShowProc([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(procState{})); !tt.wantErr && diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
