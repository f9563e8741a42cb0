package ipam

import "net/netip"

// ExcludeConn excludes both ends of lbd's connection to the master, as
// conn reports them once connected (discovery.Source.ConnAddrs: the
// master's address, then the local one), naming the master as master
// says; any other address it leaves to next.
func ExcludeConn(conn func() (remote, local netip.Addr, ok bool), master string, next Excluder) Excluder {
	return func(ip netip.Addr) (string, bool) {
		if m, l, ok := conn(); ok {
			switch ip {
			case m:
				return "it is the master's address (" + master + ")", true
			case l:
				return "it is the address lbd's SSH connection to the master leaves from", true
			}
		}
		return next(ip)
	}
}
