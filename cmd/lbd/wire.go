package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/lbd/lbd/daemon"
	"github.com/lbd/lbd/discovery"
	"github.com/lbd/lbd/haproxy"
	"github.com/lbd/lbd/hostcheck"
	"github.com/lbd/lbd/ipam"
	"github.com/lbd/lbd/keepalived"
	"github.com/lbd/lbd/netfilter"
	"github.com/lbd/lbd/nft"
	"github.com/lbd/lbd/reconcile"
	"github.com/lbd/lbd/store"
	"github.com/lbd/lbd/vip"
)

// Compile-time checks that the parts satisfy the reconciler's interfaces.
var (
	_ reconcile.Source       = (*discovery.Source)(nil)
	_ reconcile.Source       = (*discovery.Cached)(nil)
	_ reconcile.ParseTimer   = (*discovery.Cached)(nil)
	_ reconcile.Store        = (*store.DB)(nil)
	_ reconcile.Backend      = (*netfilter.Backend)(nil)
	_ reconcile.Verifier     = (*netfilter.Backend)(nil)
	_ reconcile.Backend      = (*haproxy.Backend)(nil)
	_ reconcile.Verifier     = (*haproxy.Backend)(nil)
	_ reconcile.PodRoutes    = (*hostcheck.RouteCheck)(nil)
	_ reconcile.Addresses    = (*ipam.Allocator)(nil)
	_ reconcile.AddressOwner = (*vip.Manager)(nil)
	_ reconcile.StatusWriter = (*discovery.Source)(nil)
	_ reconcile.AddressStore = (*store.DB)(nil)
	_ reconcile.AddressOwner = keepalived.Owner{}
)

// backend is what the command line needs of a backend beyond what the
// reconciler calls.
type backend interface {
	reconcile.Backend
	Cleanup(ctx context.Context) error
}

// env is one wired lbd: store, source, backend and reconciler.
type env struct {
	pools      ipam.Pools
	db         *store.DB
	source     *discovery.Source
	backend    backend
	reconciler *reconcile.Reconciler
	// ha is keepalived with --ha=keepalived, else nil.
	ha      *keepalived.Keepalived
	closers []func()
}

// afterPass is what every pass ends with, cron or daemon: with HA, the
// health file keepalived tracks and, with metrics m, the HA state metric.
func (e *env) afterPass(m *daemon.Metrics) func(*reconcile.Result, error) {
	return func(_ *reconcile.Result, err error) {
		if e.ha != nil {
			e.ha.ReportPass(err)
			if m != nil {
				m.SetHAMaster(!e.ha.Follower())
			}
		}
	}
}

func (e *env) close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
}

// setUp wires lbd from the configuration. With lock set it first takes
// the store's cross-process lock, so two lbd never sync at once.
func (a *app) setUp(ctx context.Context, lock bool) (_ *env, err error) {
	e := &env{}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	// Flags first: nothing is read, dialled or created for a bad one.
	switch a.cfg.Backend {
	case "haproxy", "iptables", "nftables":
	default:
		return nil, fmt.Errorf("--backend %q: want haproxy, iptables or nftables", a.cfg.Backend)
	}
	if e.pools, err = ipam.ParsePools(a.cfg.Pools); err != nil {
		return nil, err
	}
	haOpts, err := a.haOptions()
	if err != nil {
		return nil, err
	}
	if haOpts != nil {
		e.ha = keepalived.New(*haOpts, a.log)
	}
	if a.cfg.Master == "" {
		return nil, errors.New("--master is required (user@host[:port] of the Kubernetes master)")
	}
	if len(e.pools) == 0 {
		a.log.Warn("no address pool is configured: lbd serves nothing until --pool (or LBD_POOL) names the addresses it may serve")
	}
	if lock {
		unlock, err := store.Lock(ctx, a.cfg.DB, a.cfg.LockWait)
		if err != nil {
			return nil, err
		}
		e.closers = append(e.closers, func() { unlock() })
	}
	if e.db, err = store.Open(ctx, a.cfg.DB); err != nil {
		return nil, err
	}
	e.closers = append(e.closers, func() { e.db.Close() })
	if e.source, err = a.newSource(); err != nil {
		return nil, err
	}
	e.closers = append(e.closers, func() { e.source.Close() })
	if e.backend, err = a.newBackend(); err != nil {
		return nil, err
	}
	e.reconciler = a.newReconciler(e, e.source, e.backend)
	return e, nil
}

// newReconciler returns a reconciler over e's store with the guards from
// the flags; src and be are e's, or wrappers of them (lbd run counts their
// errors for the metrics).
func (a *app) newReconciler(e *env, src reconcile.Source, be reconcile.Backend) *reconcile.Reconciler {
	opts := reconcile.Options{MaxDelete: float64(a.cfg.MaxDelete), MaxDeleteWindow: a.cfg.MaxDeleteWindow,
		Force: a.cfg.Force, AllowDelete: a.cfg.AllowDelete, LBClass: a.cfg.LBClass}
	rc := hostcheck.NewRouteCheck(a.cfg.PodInterface)
	if a.cfg.RouteCheck {
		opts.Routes = rc
	}
	opts.Addresses = &ipam.Allocator{Pools: e.pools, Exclude: a.excluder(e.source, rc)}
	if a.cfg.VIPInterface != "" {
		opts.Owner = vip.New(a.cfg.VIPInterface, a.log)
	}
	if e.ha != nil {
		opts.Owner, opts.Follower = e.ha.Owner(), e.ha.Follower
	}
	if a.cfg.StatusWrite {
		opts.Status = e.source
	}
	// haproxy terminates the connection, so in-cluster clients must come
	// through it; the kernel backends forward packets unchanged to the
	// service, which kube-proxy's VIP shortcut does as well.
	opts.Step = daemon.StepHook()
	opts.IPMode = "VIP"
	if be.Name() == "haproxy" {
		opts.IPMode = "Proxy"
	}
	return reconcile.New(src, be, e.db, a.log, opts)
}

// excluder names the addresses lbd never serves, even inside a pool (the
// pools themselves refuse loopback, link-local, multicast and
// unspecified): both ends of the SSH connection to the master, and the
// pod network that --pod-interface routes.
func (a *app) excluder(src *discovery.Source, rc *hostcheck.RouteCheck) ipam.Excluder {
	return func(ip netip.Addr) (string, bool) {
		if m, l, ok := src.ConnAddrs(); ok {
			switch ip {
			case m:
				return "it is the master's address (" + a.cfg.Master + ")", true
			case l:
				return "it is the address lbd's SSH connection to the master leaves from", true
			}
		}
		return rc.InPodNetwork(ip)
	}
}

// newSource builds the SSH discovery source.
func (a *app) newSource() (*discovery.Source, error) {
	if a.cfg.Master == "" {
		return nil, errors.New("--master is required (user@host[:port] of the Kubernetes master)")
	}
	if a.cfg.InsecureHost {
		a.log.Warn("SSH host key verification is OFF (--insecure-ignore-host-key): anyone on the path can impersonate the master")
	}
	return discovery.New(discovery.Config{
		Master:                a.cfg.Master,
		KeyFiles:              a.cfg.KeyFiles(),
		KnownHosts:            a.cfg.KnownHosts,
		InsecureIgnoreHostKey: a.cfg.InsecureHost,
		ConnectTimeout:        a.cfg.SSHTimeout,
		CommandTimeout:        a.cfg.KubectlTimeout,
		Kubectl:               a.cfg.Kubectl,
		Log:                   a.log,
	})
}

// newBackend builds the backend named by --backend.
func (a *app) newBackend() (backend, error) {
	switch a.cfg.Backend {
	case "iptables":
		return netfilter.New(a.netfilterOptions(), a.log)
	case "nftables":
		return nft.New(nft.Options{
			Masquerade:    a.cfg.Masquerade,
			MasqueradeBit: a.cfg.MasqBit,
			PodInterface:  a.cfg.PodInterface,
			Table:         a.cfg.NFTTable,
		}, a.log)
	case "haproxy":
		return haproxy.New(haproxy.Options{
			BasePath:      a.cfg.HAProxyBase,
			Dir:           a.cfg.HAProxyDir,
			Reload:        a.cfg.HAProxyReload,
			MasterSocket:  a.cfg.HAProxyMasterSocket,
			StatsSocket:   a.cfg.HAProxyStatsSocket,
			HaproxyBin:    a.cfg.HAProxyBin,
			CheckInterval: a.cfg.CheckInterval,
			Fall:          a.cfg.CheckFall,
			Rise:          a.cfg.CheckRise,
			User:          a.cfg.HAProxyUser,
			ReloadTimeout: a.cfg.HAProxyReloadTimeout,
			Group:         a.cfg.HAProxyUser,
		}, a.log), nil
	}
	return nil, fmt.Errorf("--backend %q: want haproxy, iptables or nftables", a.cfg.Backend)
}

func (a *app) netfilterOptions() netfilter.Options {
	return netfilter.Options{
		Masquerade:    a.cfg.Masquerade,
		MasqueradeBit: a.cfg.MasqBit,
		PodInterface:  a.cfg.PodInterface,
		Binary:        a.cfg.IPTablesBin,
		SNATAddresses: a.cfg.SNATAddrs,
	}
}
