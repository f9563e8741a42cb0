package report

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/lbd/lbd/discovery"
	"github.com/lbd/lbd/lb"
)

// Status is what lbd status prints: the store's view for one backend.
type Status struct {
	// Backend is the backend whose states are shown.
	Backend string
	// Note, when not empty, is a line printed first in the table format
	// ("backend: iptables (of the last sync)").
	Note      string
	Services  []lb.Service
	Addresses []lb.AddressState
	States    []lb.ServiceState
	// Last is the last sync, nil when none is recorded.
	Last *lb.SyncRecord
	// HA is the HA pair's line, nil without --ha=keepalived.
	HA *HA
}

// HA is this LB's part in a keepalived pair.
type HA struct {
	Interface string
	RouterID  int
	// State is "MASTER", "BACKUP", ... or why it is unknown.
	State string
}

// WriteStatus writes s in format "table" (or ""): the mapping with the
// notes' columns (the ServiceToEndPointsMapping view) and each service's
// state, the services not programmed with the reason, every address with
// its state, the last sync (its error escaped: a record of an older lbd
// may hold the master's raw stderr) and the HA line; or in format "json"
// the services, addresses and states.
func WriteStatus(w io.Writer, format string, s Status) error {
	if err := checkFormat(format); err != nil {
		return err
	}
	if format == "json" {
		return writeJSON(w, struct {
			Backend   string            `json:"backend"`
			Services  []lb.Service      `json:"services"`
			Addresses []lb.AddressState `json:"addresses"`
			States    []lb.ServiceState `json:"states"`
		}{s.Backend, s.Services, s.Addresses, s.States})
	}
	if s.Note != "" {
		fmt.Fprintln(w, s.Note)
	}
	state := map[string]string{}
	for _, st := range s.States {
		state[st.Key] = st.State
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tNAMESPACE\tCLUSTER-IP\tEXTERNAL-IP\tPORTS\tENDPOINTS\tSTATE")
	for _, svc := range s.Services {
		cip := "None"
		if svc.ClusterIP.IsValid() {
			cip = svc.ClusterIP.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", svc.Name, svc.Namespace, cip,
			orDash(svc.ExternalIPsString(), "<none>"), orDash(svc.PortsString(), "-"), orDash(svc.EndpointsString(), "<none ready>"),
			orDash(state[svc.Key()], "unknown"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var notServed []lb.ServiceState
	for _, st := range s.States {
		if st.Reason != "" {
			notServed = append(notServed, st)
		}
	}
	if len(notServed) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "SERVICE\tSTATE (%s)\tREASON\n", s.Backend)
		for _, st := range notServed {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", st.Key, st.State, st.Reason)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(s.Addresses) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SERVICE\tADDRESS\tFROM\tSTATE\tREASON")
		for _, st := range s.Addresses {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", st.Key, addrOrNone(st.Addr), st.Origin, st.State, orDash(st.Reason, "-"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if h := s.Last; h != nil {
		fmt.Fprintf(w, "\nlast sync: %s, %s backend, %s in %s", h.Started.Local().Format(time.RFC3339), h.Backend, h.Result, h.Duration.Round(time.Millisecond))
		if h.Err != "" {
			fmt.Fprintf(w, ": %s", discovery.Printable(h.Err))
		}
		fmt.Fprintln(w)
	}
	if s.HA != nil {
		fmt.Fprintf(w, "ha: keepalived on %s, VRRP router %d: this LB is %s\n", s.HA.Interface, s.HA.RouterID, s.HA.State)
	}
	return nil
}
