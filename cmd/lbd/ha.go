package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/lbd/lbd/ipam"
	"github.com/lbd/lbd/keepalived"
	"github.com/lbd/lbd/reconcile"
)

// haOptions turns the --ha-* flags into keepalived's options; nil without
// --ha=keepalived. It does no I/O, so a bad flag fails before any.
func (a *app) haOptions() (*keepalived.Options, error) {
	c := a.cfg
	switch c.ha {
	case "", "none":
		return nil, nil
	case "keepalived":
	default:
		return nil, fmt.Errorf("--ha %q: want none or keepalived", c.ha)
	}
	if c.vipInterface != "" {
		return nil, errors.New("--vip-interface with --ha=keepalived: keepalived owns and announces the addresses; leave --vip-interface empty")
	}
	o := keepalived.Options{Interface: c.haInterface, Priority: c.haPriority, AdvertInt: c.haAdvertInt,
		RouterID: c.haRouterID, Preempt: c.haPreempt, ConntrackdConfig: c.haConntrackd, ConfigPath: c.haConfig,
		TrackFile: c.haTrackFile, NotifyScript: c.haNotify, StateFile: c.haStateFile, PIDFile: c.haPIDFile}
	for _, p := range c.haPeers {
		ip, err := netip.ParseAddr(p)
		if err != nil {
			return nil, fmt.Errorf("--ha-peer %q: not an IP address", p)
		}
		o.Peers = append(o.Peers, ip)
	}
	if c.haSource != "" {
		ip, err := netip.ParseAddr(c.haSource)
		if err != nil {
			return nil, fmt.Errorf("--ha-source %q: not an IP address", c.haSource)
		}
		o.SourceIP = ip
	}
	// The addresses SNAT gives the pods' side float with the served
	// ones: conntrackd moves a flow with its SNAT address, and the pods'
	// replies to it must reach the new master.
	if len(c.snatAddrs) > 0 {
		o.PodAddresses, o.PodInterface = c.snatAddrs, c.podInterface
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
//
// While nothing is served, the instance holds idle, a stand-in: keepalived
// refuses an instance without an address, and without an instance no LB
// ever becomes master, so none would allocate the first LoadBalancer
// address and the pair would wait forever.
type haOwner struct {
	k    *keepalived.Keepalived
	log  *slog.Logger
	idle func() netip.Addr
}

// Interface keys lbd's owned-address record; in this mode it stays empty.
func (o haOwner) Interface() string { return "keepalived:" + o.k.Options().Interface }

// Sync renders every wanted address into keepalived's include file,
// validated, and reloads keepalived when the file changed.
func (o haOwner) Sync(ctx context.Context, want, _ []netip.Addr) ([]netip.Addr, error) {
	family := o.k.Options().Peers[0].Is4()
	if !slices.ContainsFunc(want, func(a netip.Addr) bool { return a.Is4() == family }) && o.idle != nil {
		if a := o.idle(); a.IsValid() {
			want = append(slices.Clone(want), a)
		}
	}
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

// idleAddress returns the stand-in address of haOwner: the lowest address
// of the first pool of family that ipam admits (never the master's own or
// the pod network), or none.
func idleAddress(pools ipam.Pools, ex ipam.Excluder, family4 bool) netip.Addr {
	for _, p := range pools {
		a := p.First()
		if !a.IsValid() || a.Is4() != family4 {
			continue
		}
		for i := 0; i < 16 && p.Contains(a); i, a = i+1, a.Next() {
			if pools.Admit(a, ex) == nil {
				return a
			}
		}
	}
	return netip.Addr{}
}

// haFollower reports whether this LB is not the VRRP master (or does not
// know): it then serves what the master allocated and writes no status.
func haFollower(k *keepalived.Keepalived) func() bool {
	return func() bool { return !haMaster(k) }
}

// haMaster reports whether keepalived runs and its hook last said MASTER:
// a keepalived killed with SIGKILL leaves MASTER in the state file, and
// its lbd must not go on writing status as the master.
func haMaster(k *keepalived.Keepalived) bool {
	if k.Running() != nil {
		return false
	}
	st, err := k.State()
	return err == nil && st == keepalived.StateMaster
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

// haPoll is how often lbd run reads the VRRP state the notify hook wrote.
const haPoll = 100 * time.Millisecond

// haWatch reads k's state every poll until ctx ends. On every change
// between master and not master it calls changed; on becoming master it
// also asks the daemon for a full resync on sigs (as SIGHUP does): only
// the master allocates and writes status, and without a pass a new master
// would leave a service created during the election waiting until the
// next resync.
func haWatch(ctx context.Context, k *keepalived.Keepalived, poll time.Duration, sigs chan<- os.Signal, changed func(master bool)) {
	t := time.NewTicker(poll)
	defer t.Stop()
	was := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		is := haMaster(k)
		if is == was {
			continue
		}
		was = is
		changed(is)
		if is {
			select {
			case sigs <- syscall.SIGHUP:
			case <-ctx.Done():
				return
			}
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
