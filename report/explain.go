package report

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"github.com/lbd/lbd/explain"
	"github.com/lbd/lbd/lb"
)

// WriteExplain writes lbd explain's answer for target (as the user wrote
// it) in the backend: in format "table" (or "") per service port its
// state, the backend's objects live and missing, the endpoints with
// readiness, programming and route, affinity and source ranges wanted and
// live, and whether the data plane matches, with the differences; in
// format "json" one document of target, backend and ports.
func WriteExplain(w io.Writer, format, target, backend string, ports []explain.Port) error {
	if err := checkFormat(format); err != nil {
		return err
	}
	if format == "json" {
		return writeJSON(w, struct {
			Target   string         `json:"target"`
			Backend  string         `json:"backend"`
			Services []explain.Port `json:"services"`
		}{target, backend, ports})
	}
	for i, x := range ports {
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
