package keepalived

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"time"
)

// ErrNoAddress means there is no served address of the peers' family:
// keepalived refuses an instance without one in virtual_ipaddress, so
// there is nothing valid to render. [Keepalived.Apply] keeps the old file.
var ErrNoAddress = errors.New("no served address of the peers' address family")

// Render returns the keepalived include file for o (defaults applied and
// validated). It is pure and deterministic: the same options give the
// same bytes, whatever the order of o.Addresses.
//
// Every served address is listed, as a host address (/32 or /128) on
// o.Interface. keepalived allows one address family in virtual_ipaddress,
// the instance's, which is the peers' family; the lowest served address
// of that family goes there and every other address goes to
// virtual_ipaddress_excluded. keepalived adds and removes both lists
// alike on transitions, but only virtual_ipaddress travels in the adverts
// and a backup ignores adverts whose list differs from its own. Keeping
// that list to one address means the two LBs disagree only while that
// one address changes, not on every new service (and skip_check_adv_addr
// skips the comparison for adverts from the master already known). It
// also keeps adverts small: a VRRP packet holds at most 255 addresses.
// o.PodAddresses follow in virtual_ipaddress_excluded on o.PodInterface.
func Render(o Options) ([]byte, error) {
	addrs := normalize(o.Addresses)
	four := o.Peers[0].Is4()
	anchor := slices.IndexFunc(addrs, func(a netip.Addr) bool { return a.Is4() == four })
	if anchor < 0 {
		return nil, fmt.Errorf("render keepalived config: %d addresses: %w", len(addrs), ErrNoAddress)
	}
	var b bytes.Buffer
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# Written by lbd: every change here is overwritten. keepalived's main")
	p("# configuration includes this file and sets enable_script_security and")
	p("# script_user root (see lbd's hack/ha/keepalived.conf).")
	p("")
	p("# 0 in the file is healthy; anything else (weight 0) puts the instance")
	p("# in FAULT, so an LB whose lbd cannot discover or program gives its")
	p("# addresses up. Until lbd writes it, a missing file reads as 1.")
	p("track_file %s {", TrackName)
	p("    file %q", o.TrackFile)
	p("    weight 0")
	p("    init_file 1")
	p("}")
	p("")
	p("vrrp_instance %s {", InstanceName)
	// nopreempt needs the initial state BACKUP; with preemption both
	// still start as BACKUP so that a restart never grabs the addresses
	// before hearing the peer.
	p("    state BACKUP")
	if !o.Preempt {
		p("    nopreempt")
	}
	p("    interface %s", o.Interface)
	p("    version 3")
	p("    virtual_router_id %d", o.RouterID)
	p("    priority %d", o.Priority)
	p("    advert_int %s", seconds(o.AdvertInt))
	p("    garp_master_delay 0")
	p("    skip_check_adv_addr on")
	if o.SourceIP.IsValid() {
		p("    unicast_src_ip %s", o.SourceIP)
	}
	p("    unicast_peer {")
	for _, peer := range o.Peers {
		p("        %s", peer)
	}
	p("    }")
	p("    virtual_ipaddress {")
	p("        %s dev %s", host(addrs[anchor]), o.Interface)
	p("    }")
	pods := normalize(o.PodAddresses)
	if len(addrs) > 1 || len(pods) > 0 {
		p("    virtual_ipaddress_excluded {")
		for i, a := range addrs {
			if i != anchor {
				p("        %s dev %s", host(a), o.Interface)
			}
		}
		for _, a := range pods {
			p("        %s dev %s", host(a), o.PodInterface)
		}
		p("    }")
	}
	p("    track_file {")
	p("        %s", TrackName)
	p("    }")
	for _, state := range []string{StateMaster, StateBackup, StateFault, StateStop} {
		keyword := map[string]string{StateMaster: "notify_master", StateBackup: "notify_backup", StateFault: "notify_fault", StateStop: "notify_stop"}[state]
		p("    %s %q", keyword, notifyCommand(o, state))
	}
	p("}")
	return b.Bytes(), nil
}

// notifyCommand is the command line keepalived runs for state; Validate
// has made sure no path holds a blank or a quote.
func notifyCommand(o Options, state string) string {
	cmd := o.NotifyScript + " " + state + " " + o.StateFile
	if o.ConntrackdConfig != "" {
		cmd += " " + o.ConntrackdConfig
	}
	return cmd
}

// normalize returns addrs unmapped, without zones and duplicates, sorted.
func normalize(addrs []netip.Addr) []netip.Addr {
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if a.IsValid() {
			out = append(out, a.Unmap().WithZone(""))
		}
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out)
}

func host(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

// seconds writes d in seconds with at most two decimals ("1", "0.1",
// "0.05"), as keepalived's advert_int reads it.
func seconds(d time.Duration) string {
	return strconv.FormatFloat(float64(d/(10*time.Millisecond))/100, 'f', -1, 64)
}
