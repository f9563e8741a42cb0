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
	"github.com/lbd/lbd/store"
)

// status prints the stored mapping with the notes' columns (the
// ServiceToEndPointsMapping view) and the last sync.
func (a *app) status(ctx context.Context) error {
	if _, err := os.Stat(a.cfg.db); err != nil {
		return fmt.Errorf("no state at %s (run lbd once first, or set --db): %w", a.cfg.db, err)
	}
	db, err := store.Open(ctx, a.cfg.db)
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
	switch a.cfg.output {
	case "json":
		return writeJSON(a.stdout, svcs)
	case "table", "":
	default:
		return fmt.Errorf("-o %q: want table or json", a.cfg.output)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tNAMESPACE\tCLUSTER-IP\tEXTERNAL-IP\tPORTS\tENDPOINTS")
	for _, s := range svcs {
		cip := "None"
		if s.ClusterIP.IsValid() {
			cip = s.ClusterIP.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Namespace, cip,
			orDash(s.ExternalIPsString(), "<none>"), orDash(s.PortsString(), "-"), orDash(s.EndpointsString(), "<none ready>"))
	}
	if err := tw.Flush(); err != nil {
		return err
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
	return nil
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
