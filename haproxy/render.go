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

// SlotName returns the name of server slot i (from 1) of a backend: "s1",
// "s2", ... Slots, not endpoints, name the servers, so that an endpoint
// change is a runtime change of a slot's address or state (see the package
// doc); a slot's position is also its haproxy server id, which the stick
// tables of ClientIP affinity record.
func SlotName(i int) string { return "s" + strconv.Itoa(i) }

// PeersFile is the name of the file holding the peers section that ClientIP
// affinity's stick tables name; it holds no '_', so it never collides with
// a service's file.
const PeersFile = "lbd-peers.cfg"

// PeersSection is the name of that peers section.
const PeersSection = "lbd"

// MinSlots is the fewest server slots a backend has.
const MinSlots = 4

// slotCount returns how many server slots a backend with n placed
// endpoints gets, given the prev slots it has (0: a new backend): the next
// power of two at or above n + 50 %, at least MinSlots. A backend keeps
// its slots while n fits in them, unless the fresh count is a quarter of
// them or less: the hysteresis keeps a backend that scales up and down by
// a few pods from reloading each time.
func slotCount(n, prev int) int {
	size := MinSlots
	for size < n+(n+1)/2 {
		size *= 2
	}
	if prev >= MinSlots && n <= prev && 4*size > prev {
		return prev
	}
	return size
}

// slotState is what a slot holds.
type slotState int

const (
	slotFree  slotState = iota // maint ("disabled"), a placeholder address
	slotReady                  // takes new connections
	slotDrain                  // weight 0: keeps its connections, takes no new ones
)

// slot is one server line of a backend: its state and, unless free, the
// endpoint in it.
type slot struct {
	state slotState
	addr  netip.AddrPort
}

// placeholder is the address of a free slot; haproxy never connects to it
// (the slot is in maintenance).
var placeholder = netip.MustParseAddrPort("127.0.0.1:1")

// placeSlots assigns p's endpoints to server slots: ready endpoints take
// new connections; serving, terminating ones drain (for ClientIP affinity
// they are left out instead: haproxy still sends a draining server the
// clients its stick table holds, and a terminating pod must get no new
// connection; leaving a slot keeps its open connections all the same). An
// endpoint keeps the slot prev gave it; new ones take the lowest free
// slots.
func placeSlots(s *lb.Service, p lb.Port, prev []slot) []slot {
	type placed struct {
		addr  netip.AddrPort
		state slotState
	}
	var want []placed
	seen := map[netip.AddrPort]bool{}
	for _, e := range p.Endpoints {
		st := slotFree
		switch {
		case e.Ready:
			st = slotReady
		case e.Serving && e.Terminating && s.Affinity != lb.AffinityClientIP:
			st = slotDrain
		}
		a := netip.AddrPortFrom(e.IP, e.Port)
		if st == slotFree || seen[a] {
			continue // services are normalized; seen guards haproxy's unique-address sanity anyway
		}
		seen[a] = true
		want = append(want, placed{a, st})
	}
	slots := make([]slot, slotCount(len(want), len(prev)))
	was := map[netip.AddrPort]int{}
	for i, sl := range prev {
		if sl.state != slotFree {
			was[sl.addr] = i
		}
	}
	var rest []placed
	for _, w := range want {
		if i, ok := was[w.addr]; ok && i < len(slots) {
			slots[i] = slot{w.state, w.addr}
		} else {
			rest = append(rest, w)
		}
	}
	next := 0
	for _, w := range rest {
		for slots[next].state != slotFree {
			next++
		}
		slots[next] = slot{w.state, w.addr}
	}
	return slots
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
// exposed service with at least one TCP port, and [PeersFile] when a
// service has ClientIP affinity. For each TCP port the file holds a
// frontend bound on every external IP at that port and a backend with a
// power-of-two number of health-checked server slots (see [SlotName]):
// ready endpoints in the first ones, serving terminating endpoints
// draining ("weight 0"), the rest free ("disabled", a placeholder
// address); with no usable slot, haproxy closes new connections at once.
// ClientIP affinity becomes a stick table on the client address whose
// entries expire after the service's timeout, shared through the peers
// section so that a reload keeps it. Other ports are listed in a comment
// (see [Unserved]).
//
// Render is pure. It fails only on a duplicate service or on names that
// are not RFC 1123 labels: the names become file names and configuration
// tokens, so a bad one must never reach a file.
func Render(svcs []lb.Service, o Options) (Files, error) { return render(svcs, o, nil, nil) }

// render is Render keeping each endpoint in the slot prev (the files on
// disk) gives it, so that an endpoint change leaves every other server
// line as it was. reuse, when set, returns the bytes already rendered for
// a service whose input is unchanged (nil: render it).
func render(svcs []lb.Service, o Options, prev Files, reuse func(s *lb.Service) []byte) (Files, error) {
	o = o.withDefaults()
	check := fmt.Sprintf(" check inter %dms fall %d rise %d\n", o.CheckInterval.Milliseconds(), o.Fall, o.Rise)
	files := make(Files, len(svcs))
	var buf bytes.Buffer
	sticky := false
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
		sticky = sticky || s.Affinity == lb.AffinityClientIP
		if reuse != nil {
			if b := reuse(s); b != nil {
				files[name] = b
				continue
			}
		}
		var old map[string][]slot
		if p, ok := prev[name]; ok {
			_, old = parseSlots(p)
		}
		buf.Reset()
		renderService(&buf, s, check, old)
		files[name] = bytes.Clone(buf.Bytes())
	}
	if sticky {
		files[PeersFile] = renderPeers(o)
	}
	return files, nil
}

// renderPeers returns [PeersFile]: the peers section with this host as its
// only peer. At a reload the old process hands its stick tables to the
// new one through it; haproxy names its local peer after the host unless
// told otherwise (-L, localpeer), hence [Options.PeerName].
func renderPeers(o Options) []byte {
	return []byte("# Peers of lbd's stick tables, written by lbd: edits are overwritten on the next sync.\n" +
		"# The one local peer hands the ClientIP affinity tables to the new process at a reload.\n" +
		"peers " + PeersSection + "\n    peer " + o.PeerName + " " + o.PeerAddr + "\n")
}

func renderService(b *bytes.Buffer, s *lb.Service, check string, prev map[string][]slot) {
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
		b.WriteString("\n    mode tcp\n    balance roundrobin\n")
		if s.Affinity == lb.AffinityClientIP {
			// type ip holds IPv4 keys only; ipv6 holds both.
			typ := "ip"
			if slices.ContainsFunc(s.ExternalIPs, netip.Addr.Is6) {
				typ = "ipv6"
			}
			fmt.Fprintf(b, "    # ClientIP affinity: a client stays on its pod until it is idle for %ds.\n", affinitySeconds(s))
			fmt.Fprintf(b, "    stick-table type %s size 1m expire %ds peers %s\n    stick on src\n", typ, affinitySeconds(s), PeersSection)
		}
		for i, sl := range placeSlots(s, p, prev[proxy]) {
			b.WriteString("    server ")
			b.WriteString(SlotName(i + 1))
			b.WriteByte(' ')
			switch sl.state {
			case slotFree:
				b.WriteString(placeholder.String() + " disabled")
			case slotDrain:
				b.WriteString(hostPort(sl.addr.Addr(), strconv.Itoa(int(sl.addr.Port()))) + " weight 0")
			default:
				b.WriteString(hostPort(sl.addr.Addr(), strconv.Itoa(int(sl.addr.Port()))))
			}
			b.WriteString(check)
		}
	}
}

// affinitySeconds is the service's ClientIP timeout in whole seconds, at
// least 1 (Kubernetes' default when none is given).
func affinitySeconds(s *lb.Service) int64 {
	t := s.AffinityTimeout
	if t <= 0 {
		t = lb.DefaultAffinityTimeout
	}
	return max(1, int64(t/time.Second))
}

// parseSlots reads back a file Render wrote: per backend, its server
// slots, and the file's skeleton, its bytes with every server line cut to
// "server <slot>". Two files with the same skeleton differ only in what
// their slots hold, which the runtime API can change without a reload.
func parseSlots(f []byte) (skeleton []byte, slots map[string][]slot) {
	slots = map[string][]slot{}
	var sk bytes.Buffer
	sk.Grow(len(f))
	proxy := ""
	for len(f) > 0 {
		line, rest, _ := bytes.Cut(f, []byte("\n"))
		f = rest
		t := bytes.TrimSpace(line)
		if after, ok := bytes.CutPrefix(t, []byte("backend ")); ok {
			proxy = string(after)
		}
		fields := bytes.Fields(t)
		if len(fields) >= 3 && string(fields[0]) == "server" && proxy != "" {
			sl := slot{state: slotReady}
			a, err := netip.ParseAddrPort(string(fields[2]))
			if err == nil {
				sl.addr = a
			}
			switch {
			case bytes.Contains(t, []byte(" disabled")):
				sl = slot{state: slotFree}
			case bytes.Contains(t, []byte(" weight 0 ")):
				sl.state = slotDrain
			}
			slots[proxy] = append(slots[proxy], sl)
			// The skeleton keeps every word but the address and the state.
			sk.WriteString("server ")
			sk.Write(fields[1])
			for i := 3; i < len(fields); i++ {
				switch w := string(fields[i]); {
				case w == "disabled":
				case w == "weight" && i+1 < len(fields) && string(fields[i+1]) == "0":
					i++
				default:
					sk.WriteByte(' ')
					sk.WriteString(w)
				}
			}
			sk.WriteByte('\n')
			continue
		}
		sk.Write(line)
		sk.WriteByte('\n')
	}
	return sk.Bytes(), slots
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

// renderedFile is a service's rendered file and the service it came from.
type renderedFile struct {
	svc *lb.Service
	out []byte
}

// renderCached renders desired against cur (the files on disk), reusing
// the bytes of each service whose input equals the last one rendered and
// whose file still holds them: rendering 10,000 services costs far more
// than the one that changed.
func (b *Backend) renderCached(desired []lb.Service, cur Files) (Files, error) {
	missed := map[string]bool{}
	reuse := func(s *lb.Service) []byte {
		name := FileName(s.Namespace, s.Name)
		if c, ok := b.renders[name]; ok && c.svc.Equal(s) && bytes.Equal(cur[name], c.out) {
			return c.out
		}
		missed[name] = true
		return nil
	}
	files, err := render(desired, b.o, cur, reuse)
	if err != nil {
		return nil, err
	}
	if b.renders == nil {
		b.renders = make(map[string]renderedFile, len(desired))
	}
	if len(b.renders) > 2*len(desired)+16 { // drop the services gone
		keep := make(map[string]renderedFile, len(desired))
		for i := range desired {
			name := FileName(desired[i].Namespace, desired[i].Name)
			if c, ok := b.renders[name]; ok {
				keep[name] = c
			}
		}
		b.renders = keep
	}
	for i := range desired {
		s := &desired[i]
		name := FileName(s.Namespace, s.Name)
		if missed[name] {
			b.renders[name] = renderedFile{s.Clone(), files[name]}
		}
	}
	return files, nil
}
