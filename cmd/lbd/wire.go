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

// Compile-time checks of the interfaces lbd only asserts at run time;
// the compiler checks the others where they are wired below.
var (
	_ reconcile.ParseTimer   = (*discovery.Cached)(nil)
	_ reconcile.Verifier     = (*netfilter.Backend)(nil)
	_ reconcile.Verifier     = (*haproxy.Backend)(nil)
	_ reconcile.AddressStore = (*store.DB)(nil)
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
	// Never served, even inside a pool (the pools themselves refuse
	// loopback, link-local, multicast and unspecified): both ends of the
	// SSH connection to the master, and the pod network.
	al := &ipam.Allocator{Pools: e.pools, Exclude: ipam.ExcludeConn(e.source.ConnAddrs, a.cfg.Master, rc.InPodNetwork)}
	opts.Addresses = al
	if a.cfg.VIPInterface != "" {
		opts.Owner = vip.New(a.cfg.VIPInterface, a.log)
	}
	if e.ha != nil {
		v4 := e.ha.Options().Peers[0].Is4()
		opts.Owner = e.ha.Owner(func() netip.Addr { return e.pools.StandIn(al.Exclude, v4) })
		opts.Follower = e.ha.Follower
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

// newSource builds the SSH discovery source.
func (a *app) newSource() (*discovery.Source, error) {
	if a.cfg.Master == "" {
		return nil, errors.New("--master is required (user@host[:port] of the Kubernetes master)")
	}
	if a.cfg.InsecureHost {
		a.log.Warn("SSH host key verification is OFF (--insecure-ignore-host-key): anyone on the path can impersonate the master")
	}
	c := a.cfg
	return discovery.New(discovery.Config{Master: c.Master, KeyFiles: c.KeyFiles(), KnownHosts: c.KnownHosts, InsecureIgnoreHostKey: c.InsecureHost,
		ConnectTimeout: c.SSHTimeout, CommandTimeout: c.KubectlTimeout, Kubectl: c.Kubectl, Log: a.log})
}

// newBackend builds the backend named by --backend.
func (a *app) newBackend() (backend, error) {
	c := a.cfg
	switch c.Backend {
	case "iptables":
		return netfilter.New(a.netfilterOptions(), a.log)
	case "nftables":
		return nft.New(nft.Options{Masquerade: c.Masquerade, MasqueradeBit: c.MasqBit, PodInterface: c.PodInterface, Table: c.NFTTable}, a.log)
	case "haproxy":
		return haproxy.New(haproxy.Options{BasePath: c.HAProxyBase, Dir: c.HAProxyDir, Reload: c.HAProxyReload,
			MasterSocket: c.HAProxyMasterSocket, StatsSocket: c.HAProxyStatsSocket, HaproxyBin: c.HAProxyBin,
			CheckInterval: c.CheckInterval, Fall: c.CheckFall, Rise: c.CheckRise,
			User: c.HAProxyUser, Group: c.HAProxyUser, ReloadTimeout: c.HAProxyReloadTimeout}, a.log), nil
	}
	return nil, fmt.Errorf("--backend %q: want haproxy, iptables or nftables", a.cfg.Backend)
}

func (a *app) netfilterOptions() netfilter.Options {
	return netfilter.Options{Masquerade: a.cfg.Masquerade, MasqueradeBit: a.cfg.MasqBit, PodInterface: a.cfg.PodInterface,
		Binary: a.cfg.IPTablesBin, SNATAddresses: a.cfg.SNATAddrs}
}
