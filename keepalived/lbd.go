package keepalived

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Owner puts the served addresses into keepalived's virtual_ipaddress
// (--ha=keepalived): keepalived, not lbd, then holds and announces them,
// on the VRRP master only. It satisfies reconcile.AddressOwner; lbd owns
// no address itself.
//
// While nothing of the peers' family is served, the instance holds a
// stand-in address: keepalived refuses an instance without an address,
// and without an instance no LB ever becomes master, so none would
// allocate the first LoadBalancer address and the pair would wait forever.
type Owner struct {
	k    *Keepalived
	idle func() netip.Addr
}

// Owner returns k as the reconciler's address owner; idle (may be nil)
// gives the stand-in address, or none.
func (k *Keepalived) Owner(idle func() netip.Addr) Owner { return Owner{k, idle} }

// Interface keys lbd's owned-address record: "keepalived:<interface>";
// the record stays empty.
func (o Owner) Interface() string { return "keepalived:" + o.k.o.Interface }

// Sync renders every wanted address into keepalived's include file,
// validated, and reloads keepalived when the file changed. It owns
// nothing, so it returns no address. No address to announce yet, or
// keepalived not running (the file takes effect when it starts, which is
// logged), is no error.
func (o Owner) Sync(ctx context.Context, want, _ []netip.Addr) ([]netip.Addr, error) {
	family4 := len(o.k.o.Peers) == 0 || o.k.o.Peers[0].Is4()
	if o.idle != nil && !slices.ContainsFunc(want, func(a netip.Addr) bool { return a.Is4() == family4 }) {
		if a := o.idle(); a.IsValid() {
			want = append(slices.Clone(want), a)
		}
	}
	changed, err := o.k.Apply(ctx, want)
	switch {
	case errors.Is(err, ErrNoAddress):
		return nil, nil // nothing to announce yet
	case errors.Is(err, ErrNotRunning):
		o.k.log.Warn("keepalived is not running: its configuration is written and takes effect when it starts", "file", o.k.o.ConfigPath)
		return nil, nil
	case err != nil:
		return nil, err
	}
	if changed {
		o.k.log.Info("keepalived reloaded with the served addresses", "addresses", len(want), "file", o.k.o.ConfigPath)
	}
	return nil, nil
}

// Follower reports whether this LB is not the VRRP master, or does not
// know: it then serves what the master allocated and writes no status
// (reconcile.Options.Follower).
func (k *Keepalived) Follower() bool { return !k.Master() }

// Master reports whether keepalived runs and its hook last said MASTER: a
// keepalived killed with SIGKILL leaves MASTER in the state file, and its
// lbd must not go on acting as the master.
func (k *Keepalived) Master() bool {
	if k.Running() != nil {
		return false
	}
	st, err := k.State()
	return err == nil && st == StateMaster
}

// Watch reads the VRRP state every poll until ctx ends, and calls changed
// on every change between master and not master (the first reading counts
// as a change only when it is master), logging each. lbd run asks for a full pass on
// becoming master: only the master allocates and writes status, and a
// service created during the election would otherwise wait for the next
// resync.
func (k *Keepalived) Watch(ctx context.Context, poll time.Duration, changed func(master bool)) {
	t := time.NewTicker(poll)
	defer t.Stop()
	was := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if is := k.Master(); is != was {
			was = is
			if is {
				k.log.Info("this LB became the VRRP master: full resync, to allocate and write status")
			} else {
				k.log.Info("this LB is no longer the VRRP master: it follows the master's allocations and writes no status")
			}
			changed(is)
		}
	}
}

// ReportPass writes the track file after a pass that ended with err: a
// pass that could not discover or program makes this LB give its
// addresses up. A failure to write is logged.
func (k *Keepalived) ReportPass(err error) {
	if herr := k.WriteHealth(err == nil); herr != nil {
		k.log.Error("write the HA health file", "file", k.o.TrackFile, "err", herr)
	}
}

// Describe is the state for lbd status and lbd check: "MASTER",
// "BACKUP", ... or why it is unknown.
func (k *Keepalived) Describe() string {
	st, err := k.State()
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "unknown (keepalived has not reported a state yet)"
		}
		return "unknown: " + err.Error()
	}
	return st
}

// PID returns the live keepalived process its pid file names.
func (k *Keepalived) PID() (int, error) {
	path := k.o.PIDFile
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a pid", path, b)
	}
	if err := syscall.Kill(pid, 0); err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, err)
	}
	return pid, nil
}
