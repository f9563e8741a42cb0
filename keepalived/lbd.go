package keepalived

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Owner puts the served addresses into keepalived's virtual_ipaddress
// (--ha=keepalived): keepalived, not lbd, then holds and announces them,
// on the VRRP master only. It satisfies reconcile.AddressOwner; lbd owns
// no address itself.
type Owner struct{ k *Keepalived }

// Owner returns k as the reconciler's address owner.
func (k *Keepalived) Owner() Owner { return Owner{k} }

// Interface keys lbd's owned-address record: "keepalived:<interface>";
// the record stays empty.
func (o Owner) Interface() string { return "keepalived:" + o.k.o.Interface }

// Sync renders every wanted address into keepalived's include file,
// validated, and reloads keepalived when the file changed. It owns
// nothing, so it returns no address. No address to announce yet, or
// keepalived not running (the file takes effect when it starts, which is
// logged), is no error.
func (o Owner) Sync(ctx context.Context, want, _ []netip.Addr) ([]netip.Addr, error) {
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
func (k *Keepalived) Follower() bool {
	st, err := k.State()
	return err != nil || st != StateMaster
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
