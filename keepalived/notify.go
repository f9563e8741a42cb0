package keepalived

// The VRRP states the notify hook writes to [Options.StateFile]. STOP is
// written when keepalived shuts the instance down (notify_stop).
const (
	StateMaster = "MASTER"
	StateBackup = "BACKUP"
	StateFault  = "FAULT"
	StateStop   = "STOP"
)

// NotifyScript returns the hook keepalived runs on every transition (a
// POSIX shell script; [Keepalived.Apply] installs it at
// [Options.NotifyScript], mode 0755). It takes the new state, the state
// file and, optionally, conntrackd's configuration:
//
//	lbd-notify.sh MASTER|BACKUP|FAULT|STOP STATEFILE [CONNTRACKD_CONFIG]
//
// It first records the state (atomically, by rename) so that lbd sees a
// takeover at once, then drives conntrackd: as master it commits the
// flows the peer sent into the kernel table (-c), empties both caches
// (-f), refills its own cache from the kernel (-R) and sends it to the
// peer in bulk (-B); as backup it shortens the kernel timers of the flows
// it no longer carries (-t) and asks the new master for its table (-n);
// on fault it only shortens the timers. A conntrackd failure is logged to
// stderr and does not stop the other steps, as in conntrackd's
// primary-backup.sh.
func NotifyScript() []byte { return []byte(notifyScript) }

const notifyScript = `#!/bin/sh
# lbd's keepalived notify hook, written by lbd: changes are overwritten.
# usage: lbd-notify.sh MASTER|BACKUP|FAULT|STOP STATEFILE [CONNTRACKD_CONFIG]
state=$1
statefile=$2
ctconf=$3

case $state in
MASTER|BACKUP|FAULT|STOP) ;;
*) echo "lbd-notify: unknown state '$state'" >&2; exit 2 ;;
esac

mkdir -p "$(dirname "$statefile")"
tmp="$statefile.tmp.$$"
printf '%s\n' "$state" >"$tmp" && mv -f "$tmp" "$statefile"

[ -n "$ctconf" ] || exit 0

ct() {
	conntrackd -C "$ctconf" "$@" || echo "lbd-notify: conntrackd $* failed" >&2
}

case $state in
MASTER)
	ct -c # the peer's flows, from the external cache, into the kernel
	ct -f # empty the internal and external caches
	ct -R # refill the internal cache from the kernel
	ct -B # and send it to the peer in bulk
	;;
BACKUP)
	ct -t # shorten the timers of flows this LB no longer carries
	ct -n # ask the master for a full resync
	;;
FAULT)
	ct -t
	;;
esac
exit 0
`
