package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/lbd/lbd/discovery"
	"github.com/lbd/lbd/keepalived"
	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/store"
)

// status prints the stored mapping with the notes' columns (the
// ServiceToEndPointsMapping view) and each service's state in the
// backend, the services that are not programmed with the reason, and the
// last sync.
func (a *app) status(ctx context.Context) error {
	if _, err := os.Stat(a.cfg.DB); err != nil {
		return fmt.Errorf("no state at %s (run lbd once first, or set --db): %w", a.cfg.DB, err)
	}
	db, err := store.Open(ctx, a.cfg.DB)
	if err != nil {
		return err
	}
	defer db.Close()
	svcs, err := db.Services(ctx)
	if err != nil {
		return err
	}
	hist, err := db.History(ctx, 1)
	if err != nil {
		return err
	}
	note := a.lastBackend(hist)
	report, err := db.AddressReport(ctx)
	if err != nil {
		return err
	}
	states, err := db.States(ctx, a.cfg.Backend)
	if err != nil {
		return err
	}
	state := map[string]string{}
	for _, st := range states {
		state[st.Key] = st.State
	}
	switch a.cfg.Output {
	case "json":
		return writeJSON(a.stdout, struct {
			Backend   string            `json:"backend"`
			Services  []lb.Service      `json:"services"`
			Addresses []lb.AddressState `json:"addresses"`
			States    []lb.ServiceState `json:"states"`
		}{a.cfg.Backend, svcs, report, states})
	case "table", "":
	default:
		return fmt.Errorf("-o %q: want table or json", a.cfg.Output)
	}
	if note != "" {
		fmt.Fprintln(a.stdout, note)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tNAMESPACE\tCLUSTER-IP\tEXTERNAL-IP\tPORTS\tENDPOINTS\tSTATE")
	for _, s := range svcs {
		cip := "None"
		if s.ClusterIP.IsValid() {
			cip = s.ClusterIP.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Namespace, cip,
			orDash(s.ExternalIPsString(), "<none>"), orDash(s.PortsString(), "-"), orDash(s.EndpointsString(), "<none ready>"),
			orDash(state[s.Key()], "unknown"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var notServed []lb.ServiceState
	for _, st := range states {
		if st.Reason != "" {
			notServed = append(notServed, st)
		}
	}
	if len(notServed) > 0 {
		fmt.Fprintln(a.stdout)
		tw = tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "SERVICE\tSTATE (%s)\tREASON\n", a.cfg.Backend)
		for _, st := range notServed {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", st.Key, st.State, st.Reason)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(report) > 0 {
		fmt.Fprintln(a.stdout)
		tw = tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SERVICE\tADDRESS\tFROM\tSTATE\tREASON")
		for _, st := range report {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", st.Key, addrOrNone(st.Addr), st.Origin, st.State, orDash(st.Reason, "-"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(hist) > 0 {
		h := hist[0]
		fmt.Fprintf(a.stdout, "\nlast sync: %s, %s backend, %s in %s", h.Started.Local().Format(time.RFC3339), h.Backend, h.Result, h.Duration.Round(time.Millisecond))
		if h.Err != "" {
			// Escaped again here: a record of an older lbd may hold the
			// master's raw stderr.
			fmt.Fprintf(a.stdout, ": %s", discovery.Printable(h.Err))
		}
		fmt.Fprintln(a.stdout)
	}
	if o, err := a.haOptions(); err == nil && o != nil {
		fmt.Fprintf(a.stdout, "ha: keepalived on %s, VRRP router %d: this LB is %s\n", o.Interface, o.RouterID, haState(keepalived.New(*o, a.log)))
	}
	return nil
}

// lastBackend makes the backend of the last sync in hist (newest first)
// the one plan and status look at, unless --backend (or LBD_BACKEND) was
// given. It returns the line that says so, or "" when --backend was given
// or no sync is recorded.
func (a *app) lastBackend(hist []lb.SyncRecord) string {
	if a.cfg.Given["backend"] || len(hist) == 0 || hist[0].Backend == "" {
		return ""
	}
	a.cfg.Backend = hist[0].Backend
	return fmt.Sprintf("backend: %s (of the last sync)", a.cfg.Backend)
}

// lastBackendOf is lastBackend for a command that has not opened the
// store yet; no store is no sync.
func (a *app) lastBackendOf(ctx context.Context) (string, error) {
	if a.cfg.Given["backend"] {
		return "", nil
	}
	if _, err := os.Stat(a.cfg.DB); err != nil {
		return "", nil
	}
	db, err := store.Open(ctx, a.cfg.DB)
	if err != nil {
		return "", err
	}
	defer db.Close()
	hist, err := db.History(ctx, 1)
	if err != nil {
		return "", err
	}
	return a.lastBackend(hist), nil
}

func orDash(s, none string) string {
	if s == "" {
		return none
	}
	return s
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
