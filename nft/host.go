package nft

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lbd/lbd/lb"
)

// Paths of the sysctls the backend reads and writes.
const (
	ipForwardPath   = "/proc/sys/net/ipv4/ip_forward"
	ip6ForwardPath  = "/proc/sys/net/ipv6/conf/all/forwarding"
	rpFilterPathFmt = "/proc/sys/net/ipv4/conf/%s/rp_filter"
)

// ensureForwarding turns on IPv4 forwarding, without which DNAT to the
// pods goes nowhere, and IPv6 forwarding when a service has an IPv6
// address; it warns about rp_filter settings that may drop the traffic.
// Failures are logged: the rules are still worth programming.
func (b *Backend) ensureForwarding(desired []lb.Service) {
	paths := []string{ipForwardPath}
	for i := range desired {
		if hasIPv6(&desired[i]) {
			paths = append(paths, ip6ForwardPath)
			break
		}
	}
	for _, p := range paths {
		if v, err := b.readFile(p); err == nil && strings.TrimSpace(string(v)) == "1" {
			continue
		}
		if err := b.writeFile(p, []byte("1")); err != nil {
			b.log.Error("cannot turn on forwarding", "backend", "nftables", "path", p, "err", err)
		} else {
			b.log.Info("turned on forwarding", "backend", "nftables", "path", p)
		}
	}
	var parts []string
	strict := false
	for _, dev := range []string{"all", b.opts.PodInterface} {
		if dev == "" {
			continue
		}
		v, err := b.readFile(fmt.Sprintf(rpFilterPathFmt, dev))
		s := strings.TrimSpace(string(v))
		if err != nil {
			s = "?"
		}
		parts = append(parts, dev+"="+s)
		strict = strict || s == "1"
	}
	if strict && !b.opts.Masquerade {
		b.log.Warn("rp_filter may drop service traffic", "backend", "nftables",
			"detail", "rp_filter "+strings.Join(parts, " ")+": strict reverse-path filtering with masquerade off can drop pod replies; set 2 (loose) or 0")
	}
}

func hasIPv6(s *lb.Service) bool {
	for _, ip := range s.ExternalIPs {
		if familyOf(ip) == ipv6 {
			return true
		}
	}
	return false
}

// goneEndpoint is a UDP endpoint that stopped serving a service port on
// one external address.
type goneEndpoint struct {
	vip  netip.Addr
	port uint16
	ep   netip.Addr
}

// goneUDP lists the ready UDP endpoints of old that new no longer has
// ready for the same port and external IP; their conntrack entries must go
// so the flows move to live pods (UDP has no connection to end).
func goneUDP(old, new *lb.Service) []goneEndpoint {
	if old == nil || !old.Exposed() {
		return nil
	}
	still := map[goneEndpoint]bool{}
	if new != nil && new.Exposed() {
		for _, p := range new.Ports {
			if p.Protocol != lb.UDP {
				continue
			}
			for _, ip := range new.ExternalIPs {
				for _, e := range p.ReadyEndpoints() {
					still[goneEndpoint{ip.Unmap(), p.Port, e.IP.Unmap()}] = true
				}
			}
		}
	}
	var out []goneEndpoint
	for _, p := range old.Ports {
		if p.Protocol != lb.UDP {
			continue
		}
		for _, ip := range old.ExternalIPs {
			for _, e := range p.ReadyEndpoints() {
				g := goneEndpoint{ip.Unmap(), p.Port, e.IP.Unmap()}
				if familyOf(g.vip) == familyOf(g.ep) && !still[g] {
					out = append(out, g)
				}
			}
		}
	}
	return out
}

// flushConntrack deletes the conntrack entries of UDP flows from the
// external address and port to each gone endpoint.
func (b *Backend) flushConntrack(gone []goneEndpoint) {
	for _, g := range gone {
		fam := vnl.InetFamily(unix.AF_INET)
		if familyOf(g.vip) == ipv6 {
			fam = unix.AF_INET6
		}
		f := &vnl.ConntrackFilter{}
		err := f.AddProtocol(unix.IPPROTO_UDP)
		if err == nil {
			err = f.AddIP(vnl.ConntrackOrigDstIP, net.IP(g.vip.AsSlice()))
		}
		if err == nil {
			err = f.AddPort(vnl.ConntrackOrigDstPort, g.port)
		}
		if err == nil {
			err = f.AddIP(vnl.ConntrackReplySrcIP, net.IP(g.ep.AsSlice()))
		}
		var n uint
		if err == nil {
			n, err = b.deleteConntrack(fam, f)
		}
		if err != nil {
			b.log.Warn("cannot delete UDP conntrack entries", "backend", "nftables", "vip", g.vip, "port", g.port, "endpoint", g.ep, "err", err)
			continue
		}
		b.log.Debug("deleted UDP conntrack entries", "backend", "nftables", "vip", g.vip, "port", g.port, "endpoint", g.ep, "entries", n)
	}
}
