package reconcile

import (
	"context"
	"fmt"
	"net/netip"
	"slices"

	"github.com/lbd/lbd/lb"
)

// admission is what the address pools made of one discovery: the services
// with the addresses they may be served on, and why each address is or is
// not served.
type admission struct {
	// services are the discovered services, ExternalIPs rewritten to the
	// admitted externalIPs plus the pool allocations.
	services []lb.Service
	// allocations is the new complete set of pool allocations.
	allocations []lb.Allocation
	// report has one line per address (or per pending service).
	report []lb.AddressState
	// managed are the LoadBalancer services lbd answers for, by key.
	managed map[string]*lb.LoadBalancer
	// foreign are the LoadBalancer services of another class, by key.
	foreign map[string]*lb.LoadBalancer
}

// managedClass reports whether lbd answers for a LoadBalancer service of
// class c: no class, or lbd's own.
func (r *Reconciler) managedClass(c string) bool {
	return c == "" || c == r.opts.LBClass
}

// admit applies the address pools to a discovery. rejected are the
// services discovery refused: they keep their previous allocations, as
// they keep their applied state.
func (r *Reconciler) admit(discovered []lb.Service, rejected []*lb.InvalidServiceError, prev []lb.Allocation) *admission {
	a := &admission{managed: map[string]*lb.LoadBalancer{}, foreign: map[string]*lb.LoadBalancer{}}
	a.services = make([]lb.Service, 0, len(discovered))
	if r.opts.Addresses == nil {
		a.services = append(a.services, discovered...)
		return a
	}
	var reqIdx []int
	reserved := map[netip.Addr]string{}
	for _, s := range discovered {
		if l := s.LoadBalancer; l != nil {
			if !r.managedClass(l.Class) {
				// Another implementation's service: left alone, silently.
				a.foreign[s.Key()] = l
				s.ExternalIPs = nil
				a.services = append(a.services, s)
				continue
			}
			a.managed[s.Key()] = l
			reqIdx = append(reqIdx, len(a.services))
		}
		kept := make([]netip.Addr, 0, len(s.ExternalIPs))
		for _, ip := range s.ExternalIPs {
			if err := r.opts.Addresses.Admit(ip); err != nil {
				a.report = append(a.report, lb.AddressState{Key: s.Key(), Addr: ip, Origin: lb.OriginExternalIP, State: lb.AddressRejected, Reason: err.Error()})
				continue
			}
			kept = append(kept, ip)
			if _, ok := reserved[ip]; !ok {
				reserved[ip] = s.Key()
			}
			a.report = append(a.report, lb.AddressState{Key: s.Key(), Addr: ip, Origin: lb.OriginExternalIP, State: lb.AddressServed})
		}
		s.ExternalIPs = kept
		a.services = append(a.services, s)
	}
	reqs := make([]*lb.Service, 0, len(reqIdx)+len(rejected))
	for _, i := range reqIdx {
		reqs = append(reqs, &a.services[i])
	}
	// A service discovery refused keeps what it held: it asks for exactly
	// its previous addresses, so nobody else is given them meanwhile.
	held := map[string][]netip.Addr{}
	for _, al := range prev {
		held[al.Key] = append(held[al.Key], al.Addr)
	}
	for _, e := range rejected {
		k := e.Namespace + "/" + e.Name
		if ips := held[k]; len(ips) > 0 {
			reqs = append(reqs, &lb.Service{Namespace: e.Namespace, Name: e.Name, Type: "LoadBalancer", LoadBalancer: &lb.LoadBalancer{Requested: ips}})
		}
	}
	follower := r.following()
	if follower {
		// A backup LB serves exactly what the master wrote into the
		// services' status: those are its allocations, and it hands
		// out nothing of its own, so two LBs never disagree.
		prev = fromStatus(reqs)
	}
	asg := r.opts.Addresses.Assign(prev, reqs, reserved)
	if follower {
		asg = onlyFromStatus(asg, prev, reqs)
	}
	a.allocations = asg.Allocations
	byKey := make(map[string]int, len(a.services))
	for i := range a.services {
		byKey[a.services[i].Key()] = i
	}
	for _, al := range asg.Allocations {
		i, ok := byKey[al.Key]
		if !ok {
			continue // a refused service's held address: not served anew
		}
		s := &a.services[i]
		s.ExternalIPs = append(s.ExternalIPs, al.Addr)
		a.report = append(a.report, lb.AddressState{Key: al.Key, Addr: al.Addr, Origin: al.Origin, State: lb.AddressServed})
	}
	for _, p := range asg.Pending {
		a.report = append(a.report, lb.AddressState{Key: p.Key, Origin: lb.OriginAllocated, State: lb.AddressPending, Reason: p.Reason})
	}
	for _, p := range asg.Rejected {
		a.report = append(a.report, lb.AddressState{Key: p.Key, Origin: lb.OriginRequested, State: lb.AddressRejected, Reason: p.Reason})
	}
	for _, i := range reqIdx {
		a.services[i].Normalize()
	}
	sortReport(a.report)
	return a
}

// sortReport orders the report by service, then address.
func sortReport(rep []lb.AddressState) {
	slices.SortFunc(rep, func(x, y lb.AddressState) int {
		if x.Key != y.Key {
			if x.Key < y.Key {
				return -1
			}
			return 1
		}
		return x.Addr.Compare(y.Addr)
	})
}

// finalReport marks as pending every "served" address that the backend
// does not serve after all (the service was rejected, unroutable or
// skipped): programmed holds the services as the backend now serves them.
func finalReport(rep []lb.AddressState, programmed []lb.Service) []lb.AddressState {
	served := map[string][]netip.Addr{}
	for _, s := range programmed {
		served[s.Key()] = s.ExternalIPs
	}
	out := slices.Clone(rep)
	for i := range out {
		st := &out[i]
		if st.State == lb.AddressServed && !slices.Contains(served[st.Key], st.Addr) {
			st.State, st.Reason = lb.AddressPending, "not programmed: the service was rejected, is unroutable or was skipped by the backend (see the log)"
		}
	}
	return out
}

// statusWrites returns the status writes that make every managed
// service's status.loadBalancer.ingress list the pool addresses it is
// served on (programmed: the services as the backend serves them), and
// clear the status of a service of another class that lbd wrote before
// (prev). A status that is already right is not written.
func (r *Reconciler) statusWrites(a *admission, prev []lb.Allocation, programmed []lb.Service) []lb.StatusWrite {
	if r.opts.Status == nil || r.following() {
		return nil
	}
	served := map[string][]netip.Addr{}
	for _, s := range programmed {
		served[s.Key()] = s.ExternalIPs
	}
	pool := map[string][]netip.Addr{}
	for _, al := range a.allocations {
		if slices.Contains(served[al.Key], al.Addr) {
			pool[al.Key] = append(pool[al.Key], al.Addr)
		}
	}
	var out []lb.StatusWrite
	write := func(key string, l *lb.LoadBalancer, ingress []netip.Addr) {
		slices.SortFunc(ingress, netip.Addr.Compare)
		// A stale ipMode (the backend changed from a kernel one to
		// haproxy, or back) is rewritten too; an empty one is a cluster
		// that drops the field, and rewriting it would never end.
		if slices.Equal(ingress, l.Ingress) && (len(ingress) == 0 || l.IPMode == "" || l.IPMode == r.opts.IPMode) {
			return
		}
		ns, name := splitKey(key)
		out = append(out, lb.StatusWrite{Namespace: ns, Name: name, UID: l.UID, ResourceVersion: l.ResourceVersion, Ingress: ingress, IPMode: r.opts.IPMode})
	}
	for key, l := range a.managed {
		write(key, l, pool[key])
	}
	wrote := map[string]bool{}
	for _, al := range prev {
		wrote[al.Key] = true
	}
	for key, l := range a.foreign {
		if wrote[key] && len(l.Ingress) > 0 {
			write(key, l, nil)
		}
	}
	slices.SortFunc(out, func(x, y lb.StatusWrite) int {
		if x.Key() < y.Key() {
			return -1
		}
		if x.Key() > y.Key() {
			return 1
		}
		return 0
	})
	return out
}

// splitKey splits "namespace/name".
func splitKey(key string) (ns, name string) {
	for i := 0; i < len(key); i++ {
		if key[i] == '/' {
			return key[:i], key[i+1:]
		}
	}
	return "", key
}

// servedAddrs returns the addresses of the exposed services in svcs.
func servedAddrs(svcs ...[]lb.Service) []netip.Addr {
	var out []netip.Addr
	for _, list := range svcs {
		for _, s := range list {
			out = append(out, s.ExternalIPs...)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

// syncOwned has the AddressOwner hold want and records what it owns.
func (r *Reconciler) syncOwned(ctx context.Context, as AddressStore, want []netip.Addr) error {
	o := r.opts.Owner
	owned, err := as.OwnedAddresses(ctx, o.Interface())
	if err != nil {
		return err
	}
	now, serr := o.Sync(ctx, want, owned)
	if !slices.Equal(now, owned) {
		if err := as.SaveOwnedAddresses(context.WithoutCancel(ctx), o.Interface(), now); err != nil {
			return fmt.Errorf("record owned addresses: %w (after: %v)", err, serr)
		}
	}
	if serr != nil {
		return fmt.Errorf("addresses on %s: %w", o.Interface(), serr)
	}
	return nil
}

// following reports whether this LB is the backup of an HA pair now: it
// then allocates nothing and writes no status (Options.Follower).
func (r *Reconciler) following() bool {
	return r.opts.Follower != nil && r.opts.Follower()
}

// fromStatus returns the allocations the cluster's status shows for the
// LoadBalancer services in reqs.
func fromStatus(reqs []*lb.Service) []lb.Allocation {
	var out []lb.Allocation
	for _, s := range reqs {
		if s.LoadBalancer == nil {
			continue
		}
		for _, ip := range s.LoadBalancer.Ingress {
			out = append(out, lb.Allocation{Key: s.Key(), Addr: ip, Origin: lb.OriginAllocated})
		}
	}
	return out
}

// onlyFromStatus keeps of asg the allocations that status shows (fromStatus
// gave them as prev); a service without one waits for the master.
func onlyFromStatus(asg lb.Assignment, status []lb.Allocation, reqs []*lb.Service) lb.Assignment {
	shown := map[lb.Allocation]bool{}
	for _, a := range status {
		shown[lb.Allocation{Key: a.Key, Addr: a.Addr}] = true
	}
	var out lb.Assignment
	held := map[string]bool{}
	for _, a := range asg.Allocations {
		if shown[lb.Allocation{Key: a.Key, Addr: a.Addr}] {
			out.Allocations = append(out.Allocations, a)
			held[a.Key] = true
		}
	}
	out.Rejected = asg.Rejected
	rejected := map[string]bool{}
	for _, r := range asg.Rejected {
		rejected[r.Key] = true
	}
	for _, s := range reqs {
		if k := s.Key(); !held[k] && !rejected[k] {
			out.Pending = append(out.Pending, lb.Skipped{Key: k, Reason: "this LB is the VRRP backup: it serves what the master allocated, and the master has written no address yet"})
		}
	}
	return out
}
