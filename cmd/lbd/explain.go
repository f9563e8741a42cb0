package main

import (
	"context"
	"fmt"

	"github.com/lbd/lbd/cli"
	"github.com/lbd/lbd/explain"
	"github.com/lbd/lbd/haproxy"
	"github.com/lbd/lbd/hostcheck"
	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/netfilter"
	"github.com/lbd/lbd/nft"
	"github.com/lbd/lbd/report"
)

var (
	_ explain.Backend = (*netfilter.Backend)(nil)
	_ explain.Backend = (*nft.Backend)(nil)
	_ explain.Backend = (*haproxy.Backend)(nil)
)

// explain answers lbd explain ADDRESS:PORT[/PROTO]: the applied service
// ports that serve it, and for each how the backend's data plane carries
// it, read live, against the applied state. It exits cli.ExitPending when the
// data plane differs.
func (a *app) explain(ctx context.Context, arg string) int {
	target, err := explain.ParseTarget(arg)
	if err != nil {
		return a.exit(err)
	}
	if _, err := a.openLog(""); err != nil {
		return a.exit(err)
	}
	out, err := a.explainPorts(ctx, target)
	if err == nil {
		err = report.WriteExplain(a.stdout, a.cfg.Output, arg, a.cfg.Backend, out)
	}
	if err != nil {
		return a.exit(err)
	}
	if explain.Differs(out) {
		return cli.ExitPending
	}
	return cli.ExitOK
}

// explainPorts finds the applied service ports that serve the target and
// asks the backend for each.
func (a *app) explainPorts(ctx context.Context, t explain.Target) ([]explain.Port, error) {
	db, _, _, err := a.openState(ctx)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	applied, err := db.Applied(ctx, a.cfg.Backend)
	if err != nil {
		return nil, err
	}
	states, err := db.States(ctx, a.cfg.Backend)
	if err != nil {
		return nil, err
	}
	served := lb.Serving(applied, t.Addr, t.Port, t.Proto)
	if len(served) == 0 {
		return nil, fmt.Errorf("no service applied in the %s backend serves %s", a.cfg.Backend, t)
	}
	be, err := a.newBackend()
	if err != nil {
		return nil, err
	}
	ex, ok := be.(explain.Backend)
	if !ok {
		return nil, fmt.Errorf("the %s backend cannot explain", a.cfg.Backend)
	}
	return explain.Ports(ctx, served, states, t.Addr, ex, hostcheck.NewRouteCheck(a.cfg.PodInterface).CheckIP)
}
