// Package haproxy is lbd's production backend: it serves every TCP port of
// every exposed service through haproxy, one configuration file per
// service (grouped into shard files past [Options.FilesPerService]), validated with `haproxy -c` before it is used, swapped in
// atomically, reloaded without dropping connections, and rolled back when
// anything fails.
//
// The package has two halves. [Render] and [RenderBase] are pure functions
// from services to file contents; golden-file tests pin their output and
// check it with the real haproxy. [Backend] does the I/O: it writes the
// rendered set as a new generation directory, validates it, points the
// services directory at it by one rename, reloads haproxy (through the
// master CLI socket, systemctl or the operator's command) and confirms that
// a new worker took over. On any failure the previous generation is put
// back, and the running haproxy keeps serving the previous configuration.
//
// # Layout on disk
//
// With the default [Options]:
//
//	/etc/haproxy/haproxy-global-default.cfg   global and defaults (lbd writes it only when absent)
//	/etc/haproxy/services.d                   symlink, renamed atomically on every change
//	/etc/haproxy/.services.d.lbd/gen-*        generations: one <namespace>_<service>.cfg per service,
//	                                          or past 1,000 services lbd-shard-000.cfg .. lbd-shard-255.cfg
//	/etc/haproxy/.services.d.lbd-reload-pending  reload marker (see below)
//
// haproxy is started with `-f /etc/haproxy/haproxy-global-default.cfg -f
// /etc/haproxy/services.d` and loads every *.cfg file of the directory in
// lexical order.
//
// Past [Options.FilesPerService] services the units, each the bytes its
// own file would hold, are grouped into [Options.Shards] shard files by a
// hash of their names: haproxy 2.6's master re-executes itself with the
// path of every file it loaded in one environment string, which execve
// refuses past 128 KiB (about 2,500 service files, see [MaxArgStrlen]),
// and it spends about 1 ms opening each file. Everything above the disk
// (rendering, comparing, runtime changes, [Backend.Verify],
// [Backend.Explain]) works per service whichever the layout; drift and
// haproxy's complaints name the shard, the line and the service.
//
// # Files lbd did not write
//
// lbd never deletes what it did not write. A file is lbd's when its first
// line is the header [Render] writes, "# Service <namespace>/<name>,
// written by lbd: ..."; everything else in the services directory is the
// operator's and is kept where it is: carried into every new generation
// (hard links), validated and loaded with lbd's files, named once per
// process in the log, and left by [Backend.Cleanup]. A file of the
// operator's that bears a service's file name makes that service skipped
// (the reason names the file) rather than overwritten. What cannot be
// carried, a subdirectory say, is moved out of the old generation into
// "<dir>.lbd-backup-<UTC time>" beside the services directory, and the log
// names it. Removing lbd's header from a file hands it to the operator.
//
// # Crash safety
//
// Before the services directory is pointed at a new generation, lbd writes
// the reload marker durably (temp file, fsync, rename); it removes it only
// once the reload is confirmed (or rolled back). A process that finds the
// marker owes haproxy a reload even when the files already equal the
// desired state: [Backend.Apply] reloads, and [Backend.Verify] reports it
// as drift. So a crash between the swap and the reload heals on the next
// pass.
//
// The marker also records what the master CLI's "show proc" said before
// the reload. A reload not confirmed within [Options.ReloadTimeoutFor] is
// not rolled back (haproxy may still be reading the files): the error is
// a [ReloadError] with Pending set, and the next pass compares "show proc"
// with the marker. While the master is re-executing (its socket refuses,
// its PID lives) no other reload is started; once it shows a new worker
// the reload is confirmed without another one; if it reports the reload
// failed, the previous generation is put back then.
//
// # Endpoint changes without a reload
//
// Every backend has a power-of-two number of server slots, "s1".."sN"
// (ready endpoints, draining ones with "weight 0", free ones "disabled" on
// a placeholder address), and an endpoint keeps its slot while it stays.
// Slots were chosen over "add server"/"del server": a deleted server must
// first reach zero connections (up to "timeout client", an hour), the
// file on disk could not name a server that is only draining, and the
// stick tables of ClientIP affinity record server ids, which pre-rendered
// slots keep stable across reloads and dynamic servers do not. When the
// new files differ from the current ones only in what slots hold (same
// skeleton, see parseSlots), Apply changes the running servers through
// the stats socket ("set server addr ... port", "set weight", "set server
// state ready|maint"), then rewrites the changed files in place
// atomically: no "haproxy -c" (only values the runtime API just accepted
// differ) and no reload. Anything else (a new service, port or address,
// affinity, slots exhausted, the peers file) is published and reloaded.
// The first pass of a Backend, and the pass after a runtime change
// failed, compares "show servers state" with the files even when no file
// changes, so a runtime change whose file write was lost (lbd killed in
// between) is redone or its file written on the next pass.
//
// A serving, terminating endpoint drains: it keeps its open connections
// and gets no new ones. Under ClientIP affinity it leaves its slot instead
// (maint keeps the open connections too), because haproxy still sends a
// draining server the clients its stick table holds.
//
// ClientIP affinity is a stick table on the client address with "expire"
// set to the service's timeout, naming the peers section of [PeersFile],
// whose one local peer ([Options.PeerName], haproxy's local peer name)
// carries the table across reloads: at a soft stop the old worker connects
// to the new one on [Options.PeerAddr] and pushes its entries. haproxy 2.6
// does so only once the old worker's own resync is finished ("show peers"
// flags 0x3), which takes 5 to 10 s after a worker starts that was not
// taught by its predecessor (the first one, say); before that it exits
// without pushing. So a reload first waits, at most [PeerResyncWait], for
// the running worker's peers section to be ready.
//
// haproxy cannot serve UDP or SCTP. Such ports are reported by [Unserved]
// and logged; the service's TCP ports are still served. A service with no
// TCP port at all is returned from [Backend.Apply] as an [lb.Skipped].
//
// The package imports only lb; reconcile's Backend and Verifier interfaces
// are satisfied without importing reconcile.
package haproxy
