package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lbd/lbd/hack/lab"
	"github.com/lbd/lbd/haproxy"
	"github.com/lbd/lbd/internal/testkit"
	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/netfilter"
	"github.com/lbd/lbd/nft"
	"github.com/lbd/lbd/store"
)

// TestExplainLab is lbd explain against a real service in each backend:
// the backend is programmed directly in the LB namespace of a lab of its
// own (no cluster), the store is written as a sync would, and the lbd
// binary's explain reads the kernel (or haproxy's file and stats socket)
// back. Then the data plane is broken by hand, and explain must say so and
// exit 2.
func TestExplainLab(t *testing.T) {
	testkit.RequireRoot(t)
	l := lab.ForTest(t, lab.Options{Name: "explain", Pods: 3})
	ctx := t.Context()
	if err := l.StartPods(ctx); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "lbd")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build lbd: %v\n%s", err, out)
	}
	vip := lab.LBExternalIP
	svc := lb.Service{
		Namespace: "default", Name: "web", Type: "LoadBalancer",
		ExternalIPs:     []netip.Addr{vip},
		Affinity:        lb.AffinityClientIP,
		AffinityTimeout: time.Hour,
		SourceRanges:    []netip.Prefix{netip.MustParsePrefix("192.168.121.0/24")},
		Ports: []lb.Port{{Name: "http", Port: 80, Protocol: lb.TCP, TargetPort: "80", Endpoints: []lb.Endpoint{
			{IP: l.PodIPs[0], Port: 80, Ready: true, Serving: true},
			{IP: l.PodIPs[1], Port: 80, Ready: true, Serving: true},
			{IP: l.PodIPs[2], Port: 80}, // not ready: never programmed
		}}},
	}
	svc.Normalize()
	svcs := []lb.Service{svc}
	// A first pass: the store held nothing, so the service is created.
	create := []lb.Change{{Kind: lb.Create, New: &svcs[0]}}
	target := vip.String() + ":80/tcp"
	chainKey := svc.Ports[0].Key(&svc)

	commit := func(t *testing.T, backend string) string {
		t.Helper()
		path := filepath.Join(t.TempDir(), "lbd.db")
		db, err := store.Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		rec := lb.SyncRecord{Started: time.Now(), Backend: backend, Result: "ok", Services: 1, Created: 1}
		if err := db.Commit(ctx, backend, svcs, svcs, rec); err != nil {
			t.Fatal(err)
		}
		return path
	}
	explain := func(t *testing.T, db string, flags ...string) (string, int) {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		args := append([]string{"explain", "--db", db, "--log-file", ""}, flags...)
		cmd := l.Command(c, l.LBNS, bin, append(args, target)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("lbd explain: %v", err)
		}
		t.Logf("lbd %s -> exit %d\n%s%s", strings.Join(args, " "), code, out, stderr.String())
		return string(out), code
	}
	must := func(t *testing.T, out string, parts ...string) {
		t.Helper()
		out = regexp.MustCompile(` +`).ReplaceAllString(out, " ") // tabwriter's padding
		for _, p := range parts {
			if !strings.Contains(out, p) {
				t.Errorf("explain output lacks %q", p)
			}
		}
	}
	// Common to every backend: the service, both ready endpoints
	// programmed and routed via flannel0, the unready one not programmed.
	served := []string{
		target + " is served by default/web port 80/TCP (http)",
		l.PodIPs[0].String() + ":80 ready", "routes via flannel0",
		l.PodIPs[2].String() + ":80 not ready no",
		"source ranges: 192.168.121.0/24; live: 192.168.121.0/24",
	}
	inLB := func(t *testing.T, f func() error) {
		t.Helper()
		if err := lab.InNS(l.LBNS, f); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("iptables", func(t *testing.T) {
		db := commit(t, "iptables")
		var be *netfilter.Backend
		inLB(t, func() (err error) {
			if be, err = netfilter.New(netfilter.DefaultOptions(), testLog(t)); err != nil {
				return err
			}
			_, err = be.Apply(ctx, svcs, create)
			return err
		})
		t.Cleanup(func() { lab.InNS(l.LBNS, func() error { return be.Cleanup(context.Background()) }) })
		chain := netfilter.ServicePortChain(chainKey)
		out, code := explain(t, db)
		if code != exitOK {
			t.Fatalf("explain exit %d, want 0 (matches)", code)
		}
		must(t, out, append(served, "jump", "nat "+netfilter.NetChain(vip)+" -> "+chain, "nat LBD-SERVICES -> "+netfilter.NetChain(vip), "present", "nat "+chain,
			"yes", "affinity: ClientIP (timeout 1h0m0s); live: ClientIP (timeout 1h0m0s)", "data plane: matches")...)
		checkJSON(t, explainOut(t, explain, db), true)

		if out, err := l.Run(ctx, l.LBNS, "iptables", "-t", "nat", "-F", chain); err != nil {
			t.Fatalf("flush: %v %s", err, out)
		}
		out, code = explain(t, db)
		if code != exitPending {
			t.Errorf("explain after iptables -F exit %d, want %d", code, exitPending)
		}
		must(t, out, "DIFFERS", "endpoint "+l.PodIPs[0].String()+":80 is not programmed",
			"nat chain "+chain+": has 0 rules", "affinity is None, want ClientIP")
	})

	t.Run("nftables", func(t *testing.T) {
		db := commit(t, "nftables")
		var be *nft.Backend
		inLB(t, func() (err error) {
			if be, err = nft.New(nft.DefaultOptions(), testLog(t)); err != nil {
				return err
			}
			_, err = be.Apply(ctx, svcs, create)
			return err
		})
		t.Cleanup(func() { be.Cleanup(context.Background()) })
		chain := nft.ServicePortChain(chainKey, false)
		out, code := explain(t, db, "--backend=nftables")
		if code != exitOK {
			t.Fatalf("explain exit %d, want 0 (matches)", code)
		}
		must(t, out, append(served, "map element", "services4 "+vip.String()+":80/TCP", "goto "+chain, "chain", chain,
			"affinity: ClientIP (timeout 1h0m0s); live: ClientIP (timeout 1h0m0s)", "data plane: matches")...)
		if out, err := l.Run(ctx, l.LBNS, "nft", "flush", "chain", "inet", nft.DefaultTable, chain); err != nil {
			t.Fatalf("flush: %v %s", err, out)
		}
		out, code = explain(t, db, "--backend=nftables")
		if code != exitPending {
			t.Errorf("explain after nft flush chain exit %d, want %d", code, exitPending)
		}
		must(t, out, "DIFFERS", "endpoint "+l.PodIPs[1].String()+":80 is not programmed",
			"chain "+chain+" has 0 rules", "source ranges are [], want [192.168.121.0/24]")
	})

	t.Run("haproxy", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		o := haproxy.Options{
			BasePath: filepath.Join(dir, "haproxy-global-default.cfg"), Dir: filepath.Join(dir, "services.d"),
			MasterSocket: filepath.Join(dir, "master.sock"), StatsSocket: filepath.Join(dir, "admin.sock"),
			Reload: "true", User: "-", Group: "-", CheckInterval: 200 * time.Millisecond,
		}
		be := haproxy.New(o, testLog(t))
		inLB(t, func() error { _, err := be.Apply(ctx, svcs, nil); return err })
		p, err := l.Spawn("haproxy", l.LBNS, "haproxy", "-W", "-S", o.MasterSocket+",mode,600", "-f", o.BasePath, "-f", o.Dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Stop() })
		db := commit(t, "haproxy")
		flags := []string{"--backend=haproxy", "--haproxy-dir", o.Dir, "--haproxy-stats-socket", o.StatsSocket, "--check-interval", "200ms"}
		lab.WaitFor(t, 15*time.Second, "haproxy to report both servers UP", func() bool {
			out, _ := explain(t, db, flags...)
			return strings.Count(out, "yes (UP)") == 2
		})
		proxy := haproxy.ProxyName(&svc, svc.Ports[0])
		out, code := explain(t, db, flags...)
		if code != exitOK {
			t.Fatalf("explain exit %d, want 0 (matches)", code)
		}
		must(t, out, append(served, "frontend", "backend", proxy, "bind "+vip.String()+":80", "2 servers",
			"stats socket "+o.StatsSocket, "affinity: ClientIP (timeout 1h0m0s); live: ClientIP", "data plane: matches")...)

		// A hand edit that drops a server: the file differs, and the
		// running haproxy (not reloaded) still has the server.
		file := filepath.Join(o.Dir, haproxy.FileName("default", "web"))
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var kept []string
		dropped := ""
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 2 && f[0] == "server" && f[2] == svc.Ports[0].Endpoints[1].String() {
				dropped = f[1] // the slot that holds the endpoint
				continue
			}
			kept = append(kept, line)
		}
		if dropped == "" {
			t.Fatalf("no server line for %s in %s:\n%s", svc.Ports[0].Endpoints[1], file, b)
		}
		if err := os.WriteFile(file, []byte(strings.Join(kept, "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
		out, code = explain(t, db, flags...)
		if code != exitPending {
			t.Errorf("explain after a hand edit exit %d, want %d", code, exitPending)
		}
		must(t, out, "DIFFERS", "differs from what lbd renders",
			"the running haproxy has server "+dropped+", which the file has not (not reloaded?)")

		// haproxy reloaded on the edited file: the server is gone live.
		c, err := net.Dial("unix", o.MasterSocket)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("reload\n"))
		c.(*net.UnixConn).CloseWrite()
		io.ReadAll(c) // the master re-executes and drops the connection
		c.Close()
		lab.WaitFor(t, 15*time.Second, "haproxy to drop the server", func() bool {
			out, _ := explain(t, db, flags...)
			return strings.Contains(out, "endpoint "+l.PodIPs[1].String()+":80 is not programmed")
		})
	})
}

// explainOut runs explain -o json and returns its output.
func explainOut(t *testing.T, explain func(*testing.T, string, ...string) (string, int), db string) string {
	t.Helper()
	out, _ := explain(t, db, "-o", "json")
	return out
}

// checkJSON checks that explain's JSON parses and says matches.
func checkJSON(t *testing.T, out string, matches bool) {
	t.Helper()
	var v struct {
		Backend  string
		Services []struct {
			Service   string
			Matches   bool
			DataPlane lb.Explanation
		}
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("explain -o json: %v\n%s", err, out)
	}
	if len(v.Services) != 1 || v.Services[0].Service != "default/web" || v.Services[0].Matches != matches ||
		len(v.Services[0].DataPlane.Have.Endpoints) != 2 {
		t.Errorf("explain -o json = %+v, want default/web with 2 live endpoints, matches %v", v, matches)
	}
}

// testLog logs to t.
func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}
