package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"

	"github.com/lbd/lbd/keepalived"
	"github.com/lbd/lbd/reconcile"
)

// haOptions turns the --ha-* flags into keepalived's options; nil without
// --ha=keepalived. It does no I/O, so a bad flag fails before any.
func (a *app) haOptions() (*keepalived.Options, error) {
	c := a.cfg
	switch c.HA {
	case "", "none":
		return nil, nil
	case "keepalived":
	default:
		return nil, fmt.Errorf("--ha %q: want none or keepalived", c.HA)
	}
	if c.VIPInterface != "" {
		return nil, errors.New("--vip-interface with --ha=keepalived: keepalived owns and announces the addresses; leave --vip-interface empty")
	}
	o := keepalived.Options{Interface: c.HAInterface, Priority: c.HAPriority, AdvertInt: c.HAAdvertInt,
		RouterID: c.HARouterID, Preempt: c.HAPreempt, ConntrackdConfig: c.HAConntrackd, ConfigPath: c.HAConfig}
	for _, p := range c.HAPeers {
		ip, err := netip.ParseAddr(p)
		if err != nil {
			return nil, fmt.Errorf("--ha-peer %q: not an IP address", p)
		}
		o.Peers = append(o.Peers, ip)
	}
	if c.HASource != "" {
		ip, err := netip.ParseAddr(c.HASource)
		if err != nil {
			return nil, fmt.Errorf("--ha-source %q: not an IP address", c.HASource)
		}
		o.SourceIP = ip
	}
	o = o.WithDefaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	return &o, nil
}

// haOwner puts the served addresses into keepalived's virtual_ipaddress in
// --ha=keepalived mode: keepalived, not lbd, then holds and announces them,
// on the VRRP master only. lbd owns no address itself.
type haOwner struct {
	k   *keepalived.Keepalived
	log *slog.Logger
}

// Interface keys lbd's owned-address record; in this mode it stays empty.
func (o haOwner) Interface() string { return "keepalived:" + o.k.Options().Interface }

// Sync renders every wanted address into keepalived's include file,
// validated, and reloads keepalived when the file changed.
func (o haOwner) Sync(ctx context.Context, want, _ []netip.Addr) ([]netip.Addr, error) {
	changed, err := o.k.Apply(ctx, want)
	switch {
	case errors.Is(err, keepalived.ErrNoAddress):
		return nil, nil // nothing to announce yet
	case errors.Is(err, keepalived.ErrNotRunning):
		o.log.Warn("keepalived is not running: its configuration is written and takes effect when it starts", "file", o.k.Options().ConfigPath)
		return nil, nil
	case err != nil:
		return nil, err
	}
	if changed {
		o.log.Info("keepalived reloaded with the served addresses", "addresses", len(want), "file", o.k.Options().ConfigPath)
	}
	return nil, nil
}

// haFollower reports whether this LB is not the VRRP master (or does not
// know): it then serves what the master allocated and writes no status.
func haFollower(k *keepalived.Keepalived) func() bool {
	return func() bool {
		st, err := k.State()
		return err != nil || st != keepalived.StateMaster
	}
}

// haHealth writes keepalived's track file after each pass: a pass that
// could not discover or program makes this LB give its addresses up.
func haHealth(k *keepalived.Keepalived, log *slog.Logger) func(*reconcile.Result, error) {
	return func(_ *reconcile.Result, err error) {
		if herr := k.WriteHealth(err == nil); herr != nil {
			log.Error("write the HA health file", "file", k.Options().TrackFile, "err", herr)
		}
	}
}

// haState returns "MASTER", "BACKUP", ... for lbd status, or why not.
func haState(k *keepalived.Keepalived) string {
	st, err := k.State()
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "unknown (keepalived has not reported a state yet)"
		}
		return "unknown: " + err.Error()
	}
	return st
}

// nonlocalBind reports whether the host lets haproxy bind an address it
// does not hold (needed on the backup LB).
func nonlocalBind() (bool, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_nonlocal_bind")
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(b)) == "1", nil
}
