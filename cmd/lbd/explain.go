package main

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/lbd/lbd/cli"
	"github.com/lbd/lbd/haproxy"
	"github.com/lbd/lbd/hostcheck"
	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/netfilter"
	"github.com/lbd/lbd/nft"
	"github.com/lbd/lbd/store"
)

// explainer is what lbd explain needs of a backend: its render of one
// applied service port and what its data plane holds for it.
type explainer interface {
	Explain(ctx context.Context, s *lb.Service, p lb.Port, addr netip.Addr) (lb.Explanation, error)
}

var (
	_ explainer = (*netfilter.Backend)(nil)
	_ explainer = (*nft.Backend)(nil)
	_ explainer = (*haproxy.Backend)(nil)
)

// explained is one service port's part of lbd explain's answer.
type explained struct {
	Service   string         `json:"service"`
	Port      lb.Port        `json:"port"`
	State     string         `json:"state,omitempty"`
	Reason    string         `json:"reason,omitempty"`
	Endpoints []explainedEP  `json:"endpoints"`
	Affinity  lb.Affinity    `json:"affinity"`
	Timeout   string         `json:"affinityTimeout,omitempty"`
	Ranges    []netip.Prefix `json:"sourceRanges,omitempty"`
	Backend   lb.Explanation `json:"dataPlane"`
	Diff      []string       `json:"diff,omitempty"`
	Matches   bool           `json:"matches"`
}

// explainedEP is one endpoint of the store with what the data plane and
// the route check say of it.
type explainedEP struct {
	lb.Endpoint
	Programmed bool   `json:"programmed"`
	Health     string `json:"health,omitempty"`
	Route      string `json:"route"`
	RouteOK    bool   `json:"routeOK"`
}

// explain answers lbd explain ADDRESS:PORT[/PROTO]: the applied service
// ports that serve it, and for each how the backend's data plane carries
// it, read live, against the applied state. It exits cli.ExitPending when the
// data plane differs.
func (a *app) explain(ctx context.Context, target string) int {
	addr, port, proto, err := parseTarget(target)
	if err != nil {
		return a.exit(err)
	}
	closeLog, err := a.openLogStderr()
	if err != nil {
		return a.exit(err)
	}
	defer closeLog()
	out, err := a.explainPorts(ctx, addr, port, proto)
	if err != nil {
		return a.exit(err)
	}
	switch a.cfg.Output {
	case "json":
		err = writeJSON(a.stdout, struct {
			Target   string      `json:"target"`
			Backend  string      `json:"backend"`
			Services []explained `json:"services"`
		}{target, a.cfg.Backend, out})
	case "table", "":
		err = printExplained(a.stdout, target, a.cfg.Backend, out)
	default:
		err = fmt.Errorf("-o %q: want table or json", a.cfg.Output)
	}
	if err != nil {
		return a.exit(err)
	}
	if slices.ContainsFunc(out, func(e explained) bool { return !e.Matches }) {
		return cli.ExitPending
	}
	return cli.ExitOK
}

// parseTarget parses ADDRESS:PORT[/PROTO] ("[v6]:PORT" for IPv6); an
// empty protocol matches every protocol of the port.
func parseTarget(s string) (netip.Addr, uint16, lb.Protocol, error) {
	hostPort, proto, _ := strings.Cut(s, "/")
	ap, err := netip.ParseAddrPort(hostPort)
	if err != nil {
		return netip.Addr{}, 0, "", fmt.Errorf("explain %q: want ADDRESS:PORT[/PROTO]: %w", s, err)
	}
	p := lb.Protocol(strings.ToUpper(proto))
	switch p {
	case "", lb.TCP, lb.UDP, lb.SCTP:
	default:
		return netip.Addr{}, 0, "", fmt.Errorf("explain %q: protocol %q: want TCP, UDP or SCTP", s, proto)
	}
	if ap.Port() == 0 {
		return netip.Addr{}, 0, "", fmt.Errorf("explain %q: port 0", s)
	}
	return ap.Addr().Unmap(), ap.Port(), p, nil
}

// explainPorts finds the applied service ports that serve the target and
// asks the backend for each.
func (a *app) explainPorts(ctx context.Context, addr netip.Addr, port uint16, proto lb.Protocol) ([]explained, error) {
	if _, err := os.Stat(a.cfg.DB); err != nil {
		return nil, fmt.Errorf("no state at %s (run lbd once first, or set --db): %w", a.cfg.DB, err)
	}
	db, err := store.Open(ctx, a.cfg.DB)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	hist, err := db.History(ctx, 1)
	if err != nil {
		return nil, err
	}
	a.lastBackend(hist)
	applied, err := db.Applied(ctx, a.cfg.Backend)
	if err != nil {
		return nil, err
	}
	states, err := db.States(ctx, a.cfg.Backend)
	if err != nil {
		return nil, err
	}
	served := lb.Serving(applied, addr, port, proto)
	target := netip.AddrPortFrom(addr, port).String() + "/" + string(proto)
	if len(served) == 0 {
		return nil, fmt.Errorf("no service applied in the %s backend serves %s", a.cfg.Backend, strings.TrimSuffix(target, "/"))
	}
	be, err := a.newBackend()
	if err != nil {
		return nil, err
	}
	ex, ok := be.(explainer)
	if !ok {
		return nil, fmt.Errorf("the %s backend cannot explain", a.cfg.Backend)
	}
	rc := hostcheck.NewRouteCheck(a.cfg.PodInterface)
	var out []explained
	for _, sp := range served {
		s, p := sp.Service, sp.Port
		e, err := ex.Explain(ctx, s, p, addr)
		if err != nil {
			return nil, err
		}
		x := explained{Service: s.Key(), Port: p, Affinity: s.Affinity, Ranges: s.SourceRanges, Backend: e}
		if s.Affinity == lb.AffinityClientIP {
			x.Timeout = s.AffinityTimeout.String()
		}
		for _, st := range states {
			if st.Key == s.Key() {
				x.State, x.Reason = st.State, st.Reason
			}
		}
		for _, ep := range p.Endpoints {
			xe := explainedEP{Endpoint: ep}
			for _, h := range e.Have.Endpoints {
				if h.Addr == netip.AddrPortFrom(ep.IP.Unmap(), ep.Port) {
					xe.Programmed, xe.Health = true, h.State
				}
			}
			xe.Route, xe.RouteOK = rc.CheckIP(ep.IP)
			x.Endpoints = append(x.Endpoints, xe)
		}
		x.Diff = e.Diff()
		x.Matches = len(x.Diff) == 0
		out = append(out, x)
	}
	return out, nil
}

// printExplained writes the readable report.
func printExplained(w io.Writer, target, backend string, out []explained) error {
	for i, x := range out {
		if i > 0 {
			fmt.Fprintln(w)
		}
		name := ""
		if x.Port.Name != "" {
			name = " (" + x.Port.Name + ")"
		}
		fmt.Fprintf(w, "%s is served by %s port %s%s, %s backend", target, x.Service, x.Port, name, backend)
		if x.State != "" {
			fmt.Fprintf(w, ", %s", x.State)
		}
		if x.Reason != "" {
			fmt.Fprintf(w, ": %s", x.Reason)
		}
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  OBJECT\tNAME\tLIVE\tDETAIL")
		for _, o := range x.Backend.Have.Objects {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", o.Kind, o.Name, presence(o.Present), o.Detail)
		}
		for _, o := range x.Backend.Want.Objects {
			if !slices.ContainsFunc(x.Backend.Have.Objects, func(h lb.LiveObject) bool { return h.Kind == o.Kind && h.Name == o.Name }) {
				fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", o.Kind, o.Name, "missing", "want: "+o.Detail)
			}
		}
		fmt.Fprintln(tw, "  ENDPOINT\tREADY\tPROGRAMMED\tROUTE")
		for _, e := range x.Endpoints {
			ready := "ready"
			switch {
			case e.Terminating:
				ready = "terminating"
			case !e.Ready:
				ready = "not ready"
			}
			prog := map[bool]string{true: "yes", false: "no"}[e.Programmed]
			if e.Health != "" {
				prog += " (" + e.Health + ")"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", e.Endpoint, ready, prog, e.Route)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		have := x.Backend.Have
		aff := string(x.Affinity)
		if x.Timeout != "" {
			aff += " (timeout " + x.Timeout + ")"
		}
		fmt.Fprintf(w, "  affinity: %s; live: %s", aff, have.Affinity)
		if have.AffinityTimeout > 0 {
			fmt.Fprintf(w, " (timeout %s)", have.AffinityTimeout)
		}
		fmt.Fprintf(w, "\n  source ranges: %s; live: %s\n", ranges(x.Ranges), ranges(have.SourceRanges))
		if x.Matches {
			fmt.Fprintln(w, "  data plane: matches the applied state")
			continue
		}
		fmt.Fprintln(w, "  data plane: DIFFERS from the applied state (the next lbd pass with --full repairs it):")
		for _, d := range x.Diff {
			fmt.Fprintf(w, "    - %s\n", d)
		}
	}
	return nil
}

func presence(ok bool) string {
	if ok {
		return "present"
	}
	return "missing"
}

func ranges(rs []netip.Prefix) string {
	if len(rs) == 0 {
		return "any client"
	}
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}
