package haproxy

import (
	"bytes"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lbd/lbd/lb"
)

// Files maps a file name in the services directory to its contents.
type Files map[string][]byte

// Names returns the file names in lexical order, the order haproxy loads
// them in.
func (f Files) Names() []string { return slices.Sorted(maps.Keys(f)) }

// Equal reports whether f and g hold the same names with the same bytes.
func (f Files) Equal(g Files) bool { return maps.EqualFunc(f, g, bytes.Equal) }

// FileName returns the name of a service's file: "<namespace>_<name>.cfg".
// Namespaces and names are RFC 1123 labels, which never hold '_', so two
// services never share a file.
func FileName(namespace, name string) string { return namespace + "_" + name + ".cfg" }

// ProxyName returns the name of the frontend and the backend of one service
// port: "lbd_<namespace>_<name>_<port>_<proto>", e.g.
// "lbd_default_nginx_80_tcp". Labels hold only [a-z0-9-], all valid in
// haproxy identifiers, and '_' cannot occur inside them, so the name is
// unique per service port.
func ProxyName(s *lb.Service, p lb.Port) string {
	return "lbd_" + s.Namespace + "_" + s.Name + "_" + strconv.Itoa(int(p.Port)) + "_" + strings.ToLower(string(p.Protocol))
}

// ServerName returns the name of the server for one endpoint: "ep_" and
// the endpoint's ip:port with '.' and ':' mapped to '-' and the port joined
// by '_', e.g. "ep_10-246-82-2_80" or "ep_fd00--1_8080". An IPv4 name holds
// exactly three '-', an IPv6 one at least two and never four groups without
// "--", so the mapping does not collide.
func ServerName(e lb.Endpoint) string {
	ip := strings.NewReplacer(".", "-", ":", "-").Replace(e.IP.String())
	return "ep_" + ip + "_" + strconv.Itoa(int(e.Port))
}

// servable reports whether haproxy can serve p.
func servable(p lb.Port) bool { return p.Protocol == lb.TCP }

// Unserved returns one entry per port of an exposed service that haproxy
// cannot serve (UDP, SCTP). These ports are left out of the rendered files
// while the service's TCP ports are still served; the entries exist to be
// logged. Key is the service's key and Reason names the port.
func Unserved(svcs []lb.Service) []lb.Skipped {
	var out []lb.Skipped
	for i := range svcs {
		s := &svcs[i]
		if !s.Exposed() {
			continue
		}
		for _, p := range s.Ports {
			if !servable(p) {
				out = append(out, lb.Skipped{Key: s.Key(), Reason: unservedReason(s, p)})
			}
		}
	}
	return out
}

func unservedReason(s *lb.Service, p lb.Port) string {
	return fmt.Sprintf("service %s port %s: haproxy cannot serve %s; use --backend=iptables", s.Key(), p, p.Protocol)
}

// rendered reports whether Render writes a file for s: it is exposed and
// has at least one port haproxy can serve.
func rendered(s *lb.Service) bool {
	return s.Exposed() && slices.ContainsFunc(s.Ports, servable)
}

// Render returns the services directory's files for svcs: one file per
// exposed service with at least one TCP port. For each TCP port the file
// holds a frontend bound on every external IP at that port and a backend
// with one health-checked server per ready endpoint (none when no endpoint
// is ready: haproxy then closes new connections at once). ClientIP
// affinity becomes "balance source" with consistent hashing, which keeps a
// client on its pod across reloads; haproxy has no affinity timeout, so
// the service's timeout is not enforced. Other ports are listed in a
// comment (see [Unserved]).
//
// Render is pure. It fails only on a duplicate service or on names that
// are not RFC 1123 labels: the names become file names and configuration
// tokens, so a bad one must never reach a file.
func Render(svcs []lb.Service, o Options) (Files, error) {
	o = o.withDefaults()
	check := fmt.Sprintf(" check inter %dms fall %d rise %d\n", o.CheckInterval.Milliseconds(), o.Fall, o.Rise)
	files := make(Files, len(svcs))
	var buf bytes.Buffer
	for i := range svcs {
		s := &svcs[i]
		if !rendered(s) {
			continue
		}
		if !lb.IsDNSLabel(s.Namespace) || !lb.IsDNSLabel(s.Name) {
			return nil, fmt.Errorf("render service %q/%q: namespace and name must be RFC 1123 labels", s.Namespace, s.Name)
		}
		name := FileName(s.Namespace, s.Name)
		if _, dup := files[name]; dup {
			return nil, fmt.Errorf("render service %s: listed twice", s.Key())
		}
		buf.Reset()
		renderService(&buf, s, check)
		files[name] = bytes.Clone(buf.Bytes())
	}
	return files, nil
}

func renderService(b *bytes.Buffer, s *lb.Service, check string) {
	fmt.Fprintf(b, "# Service %s, written by lbd: edits are overwritten on the next sync.\n", s.Key())
	for _, p := range s.Ports {
		if !servable(p) {
			fmt.Fprintf(b, "# Port %s is not served: haproxy cannot serve %s; use --backend=iptables.\n", p, p.Protocol)
		}
	}
	for _, p := range s.Ports {
		if !servable(p) {
			continue
		}
		proxy := ProxyName(s, p)
		port := strconv.Itoa(int(p.Port))
		b.WriteString("\nfrontend ")
		b.WriteString(proxy)
		b.WriteString("\n    mode tcp\n")
		for _, ip := range s.ExternalIPs {
			b.WriteString("    bind ")
			b.WriteString(hostPort(ip, port))
			b.WriteByte('\n')
		}
		if len(s.SourceRanges) > 0 {
			// spec.loadBalancerSourceRanges: other clients are closed
			// at once, before haproxy reads anything.
			b.WriteString("    acl lbd_source_ranges src")
			for _, r := range s.SourceRanges {
				b.WriteString(" " + r.String())
			}
			b.WriteString("\n    tcp-request connection reject if !lbd_source_ranges\n")
		}
		b.WriteString("    default_backend ")
		b.WriteString(proxy)
		b.WriteString("\n\nbackend ")
		b.WriteString(proxy)
		b.WriteString("\n    mode tcp\n")
		if s.Affinity == lb.AffinityClientIP {
			fmt.Fprintf(b, "    # ClientIP affinity; its timeout (%ds) is not enforced: source hashing has none\n", int64(s.AffinityTimeout/time.Second))
			b.WriteString("    balance source\n    hash-type consistent\n")
		} else {
			b.WriteString("    balance roundrobin\n")
		}
		ready := p.ReadyEndpoints()
		if len(ready) == 0 {
			b.WriteString("    # No ready endpoint: new connections are closed at once.\n")
		}
		seen := make(map[string]bool, len(ready))
		for _, e := range ready {
			srv := ServerName(e)
			if seen[srv] {
				continue // services are normalized; this guards haproxy's unique-name rule anyway
			}
			seen[srv] = true
			b.WriteString("    server ")
			b.WriteString(srv)
			b.WriteByte(' ')
			b.WriteString(hostPort(e.IP, strconv.Itoa(int(e.Port))))
			b.WriteString(check)
		}
	}
}

// hostPort formats an address for bind and server lines: "ip:port", or
// "[ip]:port" for IPv6, which haproxy parses the same way.
func hostPort(ip netip.Addr, port string) string {
	if ip.Is6() {
		return "[" + ip.String() + "]:" + port
	}
	return ip.String() + ":" + port
}

// PrometheusAddr is where the base file's lbd_prometheus frontend serves
// haproxy's Prometheus exporter (/metrics): loopback, port 8405, the port
// haproxy's documentation uses for it.
const PrometheusAddr = "127.0.0.1:8405"

// RenderBase returns the default base file: master-worker mode, an admin
// stats socket exposing the listeners to the next process (seamless
// reloads), logging to syslog with tcplog, TCP timeouts including the
// half-closed ones, retries with redispatch so that a connection to a pod
// that just went away is retried on another, and hard-stop-after so that
// old workers do not live forever.
//
// The user, group and log lines sit in a ".if !defined(LBD_WITH_HAPROXY_CFG)"
// block: the systemd drop-in sets that variable because it loads the
// operator's /etc/haproxy/haproxy.cfg first, whose global section already
// sets them (haproxy alerts on a second user or group, and would log
// everything twice). Without the variable the base file is complete on
// its own.
//
// A "frontend lbd_prometheus" serves haproxy's own Prometheus exporter on
// [PrometheusAddr] at /metrics (loopback only; scrape it with a local
// agent or node_exporter's neighbour). Like the rest of the file, it
// reaches a machine only when lbd writes the file, that is when it is
// absent.
func RenderBase(o Options) []byte {
	o = o.withDefaults()
	var b bytes.Buffer
	b.WriteString(`# haproxy-global-default.cfg: global and defaults sections for lbd.
# lbd writes this file only when it is absent; edit it freely. haproxy runs
# as: haproxy -W [-f /etc/haproxy/haproxy.cfg] -f <this file> -f <services dir>
# (lbd's systemd drop-in loads haproxy.cfg first and sets LBD_WITH_HAPROXY_CFG,
# so that the lines haproxy.cfg's global section already has are not repeated).
global
    master-worker
`)
	fmt.Fprintf(&b, "    stats socket %s mode 600 level admin expose-fd listeners\n", o.StatsSocket)
	b.WriteString("    stats timeout 30s\n")
	fmt.Fprintf(&b, "    hard-stop-after %ds\n", int64(o.HardStopAfter/time.Second))
	b.WriteString(".if !defined(LBD_WITH_HAPROXY_CFG)\n")
	if o.User != "-" {
		fmt.Fprintf(&b, "    user %s\n", o.User)
	}
	if o.Group != "-" {
		fmt.Fprintf(&b, "    group %s\n", o.Group)
	}
	b.WriteString(`    log /dev/log local0
.endif

defaults
    mode tcp
    log global
    option tcplog
    option dontlognull
    option redispatch
    retries 3
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout client-fin 30s
    timeout server-fin 30s
    timeout check 5s

# haproxy's own Prometheus exporter (built into Debian's haproxy 2.6), on
# loopback only: frontend and backend sessions, bytes, errors, server states.
frontend lbd_prometheus
    mode http
    bind ` + PrometheusAddr + `
    http-request set-log-level silent
    timeout client 30s
    http-request use-service prometheus-exporter if { path /metrics }
`)
	return b.Bytes()
}
