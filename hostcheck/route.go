package hostcheck

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lbd/lbd/lb"
)

// RouteCheck checks through netlink that the pods of a service are reached
// through the pod interface, so DNAT sends their traffic where it can be
// answered (the notes found the LB must be part of the flannel network).
type RouteCheck struct {
	// Interface is the pod interface, e.g. "flannel0".
	Interface string

	// routeGet asks the kernel for the route to an address.
	routeGet func(net.IP) ([]netlink.Route, error)
	// linkName returns the name of the interface with the given index.
	linkName func(index int) (string, error)
	// podPrefixes lists the destinations routed via the interface.
	podPrefixes func() ([]netip.Prefix, error)
	// viaInterface, when set, asks for many routes at once and says which
	// leave through the interface (see batch.go); Check asks routeGet only
	// about the others, for the words of the error. nil asks routeGet
	// about every address.
	viaInterface func(iface string, ips []netip.Addr) ([]bool, error)
	now          func() time.Time

	mu      sync.Mutex
	read    time.Time
	podNets []netip.Prefix
}

// NewRouteCheck returns a check against the kernel's routing table for
// the pod interface iface.
func NewRouteCheck(iface string) *RouteCheck {
	c := &RouteCheck{
		Interface: iface,
		now:       time.Now,
		routeGet:  netlink.RouteGet,
		linkName: func(i int) (string, error) {
			l, err := netlink.LinkByIndex(i)
			if err != nil {
				return "", err
			}
			return l.Attrs().Name, nil
		},
		viaInterface: viaInterface,
	}
	c.podPrefixes = c.PodPrefixes
	return c
}

// PodPrefixes returns the destinations the kernel routes through the pod
// interface: the pod network, which lbd never serves as a service
// address. A missing interface yields none.
func (c *RouteCheck) PodPrefixes() ([]netip.Prefix, error) {
	link, err := netlink.LinkByName(c.Interface)
	if err != nil {
		if _, ok := errors.AsType[netlink.LinkNotFoundError](err); ok {
			return nil, nil
		}
		return nil, fmt.Errorf("pod interface %s: %w", c.Interface, err)
	}
	routes, err := netlink.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("routes via %s: %w", c.Interface, err)
	}
	var out []netip.Prefix
	for _, r := range routes {
		if r.Dst == nil {
			continue // a default route via the pod interface is not the pod network
		}
		ones, _ := r.Dst.Mask.Size()
		if a, ok := netip.AddrFromSlice(r.Dst.IP); ok {
			out = append(out, netip.PrefixFrom(a.Unmap(), ones).Masked())
		}
	}
	return out, nil
}

// podNetworkMaxAge is how long InPodNetwork trusts the pod prefixes it
// read: the address allocator asks once per address, so the kernel is
// asked at most once a second.
const podNetworkMaxAge = time.Second

// InPodNetwork says whether ip lies inside the pod network, and then why
// in words, for an address allocator that must never serve it. The pod
// prefixes are read again when older than a second; a failed read keeps
// the last ones.
func (c *RouteCheck) InPodNetwork(ip netip.Addr) (string, bool) {
	c.mu.Lock()
	if c.now().Sub(c.read) > podNetworkMaxAge {
		if p, err := c.podPrefixes(); err == nil {
			c.podNets, c.read = p, c.now()
		}
	}
	nets := c.podNets
	c.mu.Unlock()
	for _, p := range nets {
		if p.Contains(ip) {
			return fmt.Sprintf("it is inside the pod network %s (routed via %s)", p, c.Interface), true
		}
	}
	return "", false
}

// RouteError says that an endpoint of a service is not reached through
// the pod interface.
type RouteError struct {
	// Service is "namespace/name"; empty from CheckIP.
	Service  string
	Endpoint netip.Addr
	// Route is how the kernel reaches Endpoint, e.g. "eth0 gw 10.245.1.1",
	// or why it could not say.
	Route     string
	Interface string
	// Err is the netlink error, if the lookup itself failed.
	Err error
}

func (e *RouteError) Error() string {
	msg := fmt.Sprintf("endpoint %s routes via %s, not %s", e.Endpoint, e.Route, e.Interface)
	if e.Err != nil {
		msg = fmt.Sprintf("endpoint %s: route lookup: %v", e.Endpoint, e.Err)
	}
	if e.Service != "" {
		return "service " + e.Service + ": " + msg
	}
	return msg
}

func (e *RouteError) Unwrap() error { return e.Err }

// Check returns nil when every ready endpoint of svc routes through the
// pod interface, and a *RouteError for the first one that does not. A
// service that is not exposed is not programmed, so it is not checked.
func (c *RouteCheck) Check(svc *lb.Service) error {
	if !svc.Exposed() {
		return nil
	}
	seen := map[netip.Addr]bool{}
	var ips []netip.Addr
	for _, p := range svc.Ports {
		for _, e := range p.ReadyEndpoints() {
			if !seen[e.IP] {
				seen[e.IP] = true
				ips = append(ips, e.IP)
			}
		}
	}
	// One netlink round for all of them (10,000 services x 10 endpoints
	// took 11.5 s one request and one socket at a time); an address the
	// batch does not vouch for is asked again alone, which gives the
	// error its words, and a failed batch asks about every address alone.
	var ok []bool
	if c.viaInterface != nil && len(ips) > 0 {
		ok, _ = c.viaInterface(c.Interface, ips)
	}
	for i, ip := range ips {
		if ok != nil && ok[i] {
			continue
		}
		if err := c.check(ip); err != nil {
			err.Service = svc.Key()
			return err
		}
	}
	return nil
}

// CheckIP returns how ip is routed, as a line for `lbd check`, and whether
// that is through the pod interface.
func (c *RouteCheck) CheckIP(ip netip.Addr) (string, bool) {
	if err := c.check(ip); err != nil {
		return err.Error(), false
	}
	return fmt.Sprintf("endpoint %s routes via %s", ip, c.Interface), true
}

func (c *RouteCheck) check(ip netip.Addr) *RouteError {
	fail := &RouteError{Endpoint: ip, Interface: c.Interface}
	routes, err := c.routeGet(net.IP(ip.Unmap().AsSlice()))
	if err != nil {
		fail.Err = err
		return fail
	}
	if len(routes) == 0 {
		fail.Route = "no route"
		return fail
	}
	r := routes[0]
	name, err := c.linkName(r.LinkIndex)
	if err != nil {
		name = fmt.Sprintf("ifindex %d (%v)", r.LinkIndex, err)
	}
	if r.Type == unix.RTN_LOCAL {
		// A pod IP that is the LB's own address is a misconfiguration,
		// even though RouteGet names the interface holding it.
		fail.Route = "local address on " + name
		return fail
	}
	if name == c.Interface {
		return nil
	}
	desc := []string{name}
	if r.Gw != nil {
		desc = append(desc, "gw "+r.Gw.String())
	}
	fail.Route = strings.Join(desc, " ")
	return fail
}
