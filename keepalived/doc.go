// Package keepalived runs lbd's two-machine HA pair on engines operators
// already trust: keepalived (VRRPv3, unicast) moves the service addresses
// between the two LBs, and conntrackd (FTFW over a dedicated link) keeps
// the established flows of the iptables backend across a takeover. lbd
// never runs an election of its own.
//
// The pure half renders text: [Render] the keepalived include file with
// one vrrp_instance that carries every address lbd serves, [NotifyScript]
// the hook keepalived runs on every transition, and [RenderConntrackd]
// conntrackd's configuration. The I/O half, [Keepalived], validates the
// include file with keepalived's own config test, swaps it in atomically,
// reloads keepalived (SIGHUP) only when the bytes changed, writes the
// health file keepalived tracks ([Keepalived.WriteHealth]) and reads the
// VRRP state the notify hook wrote ([Keepalived.State]).
//
// For lbd's wiring, [Keepalived.Owner] is the reconciler's address owner
// (it renders the served addresses instead of adding them),
// [Keepalived.Follower] its follower test, [Keepalived.ReportPass] the
// health file after each pass, and [Keepalived.Describe] and
// [Keepalived.PID] what lbd status and lbd check print. keepalived
// satisfies reconcile's interfaces without importing reconcile.
//
// How the pieces meet:
//
//   - keepalived's main configuration (hack/ha/keepalived.conf) sets
//     enable_script_security and script_user root, and includes the file
//     lbd writes ([Options.ConfigPath]).
//   - lbd writes 0 (healthy) or 1 to [Options.TrackFile]; the track_file
//     has weight 0, so any nonzero value puts the instance in FAULT and
//     the master gives its addresses up.
//   - On MASTER, BACKUP, FAULT and STOP the hook writes that word to
//     [Options.StateFile] and, when [Options.ConntrackdConfig] is set,
//     runs conntrackd as primary-backup.sh does: commit the external
//     cache, flush, resync from the kernel and bulk-send when it becomes
//     master; shorten the kernel timers and request a resync when it
//     becomes backup; shorten the timers on fault.
package keepalived
