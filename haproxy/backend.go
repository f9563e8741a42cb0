package haproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lbd/lbd/lb"
)

// Backend serves services through haproxy. It satisfies reconcile.Backend
// and reconcile.Verifier. Its methods are safe for concurrent use; calls
// are serialized.
type Backend struct {
	o    Options
	log  *slog.Logger
	tree tree
	mu   sync.Mutex

	// check validates the configuration made of base and dir
	// ("haproxy -c"); it returns a *ConfigError when haproxy rejects it.
	check func(ctx context.Context, base, dir string, files Files) error
	// reload makes haproxy load the published configuration and returns
	// once a new worker serves it.
	reload func(ctx context.Context) error
	// run runs a command and returns its combined output.
	run func(ctx context.Context, name string, args ...string) ([]byte, error)
	// reloads counts the reloads that succeeded.
	reloads atomic.Uint64
	// runtimeChanges counts the passes applied through the runtime API.
	runtimeChanges atomic.Uint64
	// stats sends one command to the stats socket and returns the answer.
	stats func(ctx context.Context, cmd string) (string, error)
	// haveStats reports whether the stats socket is there to take runtime
	// changes (haproxy runs).
	haveStats func() bool
	// synced says the running servers were compared with the files since
	// this Backend was made or since a runtime change failed; until then,
	// the next pass compares them all ("show servers state") even when
	// no file changes.
	synced bool
	// disk caches the files read from the services directory, by name,
	// with the identity they had (see readCfgsCached).
	disk map[string]diskFile
	// known holds lbd's files as this Backend last read, wrote or
	// published them, and foreign the operator's as last read; nil known
	// means unknown. While known is set, Apply trusts it instead of
	// reading the services directory (at 10,000 services the stat of
	// every file costs more than the change it serves). It is dropped
	// (and the directory read again) whenever a pass fails, Verify finds
	// drift, or a pass must publish; a new Backend (a restart) starts
	// without it.
	known, foreign Files
	// renders caches each service's rendered file with its input.
	renders map[string]renderedFile
	// bindable returns the test that haproxy can bind an address on this
	// host (nil: it can), taken once per Apply.
	bindable func() func(netip.Addr) error
	// crash, when set (tests only), is called after each step of publish
	// ([stepSwapped], ...); an error stops publish dead there, with no
	// rollback or cleanup, as if lbd had been killed at that point.
	crash func(step string) error
	// probe returns what the master CLI's "show proc" says; an error when
	// there is no master socket or the master does not answer.
	probe func(ctx context.Context) (procState, error)
	// alive reports whether the process pid exists.
	alive func(pid int) bool
	// services is the number of services of the set being published,
	// for the reload timeout.
	services int
	// peerWait bounds the wait before a reload for the peers to be ready
	// to hand the stick tables over (see awaitPeers).
	peerWait time.Duration
	// cfgLimit is the longest HAPROXY_CFGFILES a publish may make (see
	// checkCfgFiles); 0: no limit (benchmarks that stand in for haproxy).
	cfgLimit int
	// laidOut says lbd's files on disk, as last read, are laid out as
	// the options lay out what they hold (see layout.conforms).
	laidOut bool
	// foreignSeen names the operator's files already logged.
	foreignSeen map[string]bool
}

// Steps of publish, as the crash hook names them.
const (
	// stepSwapped: the services directory points at the new generation,
	// haproxy has not been asked to reload.
	stepSwapped = "swapped"
)

// crashed returns the crash hook's verdict for step (nil: go on).
func (b *Backend) crashed(step string) error {
	if b.crash == nil {
		return nil
	}
	return b.crash(step)
}

// New returns a haproxy backend with o's empty fields set to their
// defaults. log may be nil.
func New(o Options, log *slog.Logger) *Backend {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	o = o.withDefaults()
	b := &Backend{o: o, log: log.With("backend", "haproxy"), tree: newTree(o.Dir)}
	b.run = func(ctx context.Context, name string, args ...string) ([]byte, error) {
		return exec.CommandContext(ctx, name, args...).CombinedOutput()
	}
	b.check = b.checkConfig
	b.reload = b.reloadHaproxy
	b.bindable = localBind
	b.probe = b.probeMaster
	b.foreignSeen = map[string]bool{}
	b.peerWait = PeerResyncWait
	b.cfgLimit = MaxArgStrlen
	b.alive = processAlive
	b.stats = b.statsCommand
	b.haveStats = func() bool { return isSocket(b.o.StatsSocket) }
	return b
}

// Stats returns how many times this Backend reloaded haproxy (as
// [Backend.Reloads]) and how many passes it applied through the runtime
// API alone, without a reload. Both only grow; they are meant to be
// exported as counters.
func (b *Backend) Stats() (reloads, runtimeChanges uint64) {
	return b.reloads.Load(), b.runtimeChanges.Load()
}

// Workers returns how many haproxy worker processes are alive, from the
// master CLI's "show proc": 1 normally, more while old workers finish
// their connections after a reload. An error when the master does not
// answer.
func (b *Backend) Workers(ctx context.Context) (int, error) {
	st, err := b.probe(ctx)
	if err != nil {
		return 0, fmt.Errorf("haproxy workers: %w", err)
	}
	return len(st.workers), nil
}

// Reloads returns how many times this Backend published new files and had
// haproxy take them up (or found it not running, to load them at start).
func (b *Backend) Reloads() uint64 { return b.reloads.Load() }

// Name returns "haproxy", the backend's name for --backend.
func (b *Backend) Name() string { return "haproxy" }

// Options returns the backend's options with defaults filled in.
func (b *Backend) Options() Options { return b.o }

// Apply makes haproxy serve desired. It renders every service (changes is
// not needed: the rendered bytes are compared with the files on disk,
// which also repairs hand edits), and when they differ it writes a new
// generation, validates it with "haproxy -c", publishes it, reloads haproxy
// and waits for the new worker. When nothing differs it writes nothing and
// calls haproxy not at all, unless the reload marker is there: then the
// files were published by a pass that did not see haproxy load them (lbd
// died in between), and Apply reloads. The base file and the services directory are
// made first if absent, so haproxy can start even with no service yet.
//
// Partly servable services are served: their UDP and SCTP ports are
// logged (see [Unserved]) and the service counts as applied, since its TCP
// ports are exactly what was asked for. A service with no TCP port at all
// cannot be served: it is returned as skipped and its file, if one exists
// from an earlier sync, is kept as it was.
//
// On error nothing has changed: the previous files are in place and the
// running haproxy serves them. A *ConfigError carries haproxy's own
// complaint; a *ReloadError says the reload did not take.
func (b *Backend) Apply(ctx context.Context, desired []lb.Service, changes []lb.Change) ([]lb.Skipped, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.ensureBase(); err != nil {
		return nil, err
	}
	skipped, err := b.apply(ctx, desired)
	if err != nil {
		b.known, b.foreign = nil, nil // read the directory again next time
	}
	return skipped, err
}

// apply is Apply under the lock.
func (b *Backend) apply(ctx context.Context, desired []lb.Service) ([]lb.Skipped, error) {
	pend, err := b.tree.readPending()
	if err != nil {
		return nil, err
	}
	trusted := b.known != nil && pend == nil
	cur, foreign := b.known, b.foreign
	if !trusted {
		all, err := b.readCfgsCached()
		if err != nil {
			return nil, err
		}
		cur, foreign = splitOwn(unpack(all))
		b.known, b.foreign = cur, foreign
		b.noteForeign(foreign)
		b.laidOut = b.o.layoutOf(cur).conforms(cur, all)
	}
	files, err := b.renderCached(desired, cur)
	if err != nil {
		return nil, err
	}
	var skipped []lb.Skipped
	canBind := b.bindable()
	lay := b.o.layoutOf(files)
	for i := range desired {
		s := &desired[i]
		if !s.Exposed() {
			continue
		}
		var why string
		name := FileName(s.Namespace, s.Name)
		if !rendered(s) {
			why = fmt.Sprintf("service %s: no TCP port; haproxy cannot serve %s; use --backend=iptables", s.Key(), s.PortsString())
		} else if _, theirs := foreign[name]; theirs {
			why = fmt.Sprintf("service %s: %s exists and was not written by lbd (its first line is not lbd's header); lbd does not overwrite it: move it away to serve the service", s.Key(), filepath.Join(b.tree.dir, name))
		} else if _, theirs := foreign[lay.diskName(name)]; theirs {
			why = fmt.Sprintf("service %s: its shard file %s exists and was not written by lbd (its first line is not lbd's header); lbd does not overwrite it: move it away to serve the service", s.Key(), filepath.Join(b.tree.dir, lay.diskName(name)))
		}
		// haproxy -c does not try binds: an address the host lacks
		// passes it and then fails every reload, for every service.
		for _, ip := range s.ExternalIPs {
			if err := canBind(ip); why == "" && err != nil {
				why = fmt.Sprintf("service %s: external IP %s: %v", s.Key(), ip, err)
			}
		}
		if why == "" {
			continue
		}
		skipped = append(skipped, lb.Skipped{Key: s.Key(), Reason: why})
		if old, ok := cur[name]; ok {
			files[name] = old // left as it was before this call
		} else {
			delete(files, name)
		}
	}
	if pend == nil && b.laidOut && b.haveStats() {
		done, err := b.applyRuntime(ctx, files, cur)
		if err != nil {
			return nil, err
		}
		if done {
			return skipped, nil
		}
	}
	if files.Equal(cur) && pend == nil && b.laidOut {
		return skipped, nil
	}
	if trusted {
		// Publishing costs a validation and a reload: worth reading what
		// the directory holds (the operator's files, hand edits) first.
		b.known, b.foreign = nil, nil
		return b.apply(ctx, desired)
	}
	// Logged when something changes, not on every sync.
	for _, u := range Unserved(desired) {
		b.log.Warn("port not served", "service", u.Key, "reason", u.Reason)
	}
	b.known, b.foreign = nil, nil
	if !b.laidOut {
		cur = nil // the files are right, their layout on disk is not: publish them
	}
	if err := b.publish(ctx, files, cur, foreign, pend); err != nil {
		return nil, err
	}
	b.known, b.foreign = files, foreign
	b.laidOut = true
	b.synced = true // haproxy loaded the files: its servers are theirs
	return skipped, nil
}

// applyRuntime applies what it can of files through the runtime API and
// reports whether that was all (true: nothing is left to publish). When
// files equal cur it only compares the running servers with them, once
// per Backend (see synced); when they differ only in what slots hold, it
// changes the servers first, then rewrites the changed files in place:
// haproxy already serves them, so no reload follows. Otherwise, or when
// the running haproxy lacks what the files name, it returns false and
// the caller publishes and reloads. The changed files are not passed to
// "haproxy -c": only server addresses, ports and states differ from
// files haproxy validated, and the runtime API just accepted those very
// values.
func (b *Backend) applyRuntime(ctx context.Context, files, cur Files) (bool, error) {
	var names []string
	if files.Equal(cur) {
		if b.synced {
			return true, nil
		}
	} else {
		var ok bool
		if names, ok = runtimeOnly(cur, files); !ok {
			return false, nil
		}
	}
	n, err := b.syncRuntime(ctx, files, names)
	if err != nil {
		b.synced = false
		if names == nil && !errors.Is(err, errNotRuntime) && !isSocket(b.o.StatsSocket) {
			return true, nil // haproxy is not running: it loads the files when it starts
		}
		b.log.Warn("runtime change failed; reloading instead", "err", err)
		if names == nil {
			// The files are right and the servers are not: reload them.
			b.services = len(files)
			if err := b.reload(ctx); err != nil {
				return false, err
			}
			b.reloads.Add(1)
			b.synced = true
			return true, nil
		}
		return false, nil
	}
	b.synced = true
	lay := b.o.layoutOf(files)
	only := map[string]bool{}
	for _, name := range names {
		only[lay.diskName(name)] = true
	}
	disk := lay.packOnly(files, only)
	for _, name := range slices.Sorted(maps.Keys(disk)) {
		if err := writeAtomic(filepath.Join(b.tree.dir, name), disk[name], 0o644); err != nil {
			// haproxy serves the change; the next pass finds the file
			// behind and compares the servers again.
			b.synced = false
			return false, fmt.Errorf("write %s after its runtime change: %w", name, err)
		}
	}
	b.known = files
	if n > 0 || len(names) > 0 {
		b.runtimeChanges.Add(1)
		b.log.Info("endpoints changed at runtime, no reload", "services", len(names), "files", len(disk), "commands", n)
	}
	return true, nil
}

// localBind returns a test of whether haproxy can bind an address: it is
// one of this host's (this network namespace's) addresses, or the kernel
// allows binding foreign ones (net.ipv{4,6}.ip_nonlocal_bind = 1).
func localBind() func(netip.Addr) error {
	local := map[netip.Addr]bool{}
	addrs, err := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				local[ip.Unmap()] = true
			}
		}
	}
	nonlocal := func(v string) bool {
		b, err := os.ReadFile("/proc/sys/net/" + v + "/ip_nonlocal_bind")
		return err == nil && strings.TrimSpace(string(b)) == "1"
	}
	v4, v6 := nonlocal("ipv4"), nonlocal("ipv6")
	return func(ip netip.Addr) error {
		ip = ip.Unmap()
		switch {
		case local[ip], ip.Is4() && v4, ip.Is6() && v6:
			return nil
		case err != nil:
			return fmt.Errorf("cannot list this host's addresses: %w", err)
		}
		v := "ipv4"
		if ip.Is6() {
			v = "ipv6"
		}
		return fmt.Errorf("not an address of this host and net.%s.ip_nonlocal_bind is 0: haproxy could not bind it", v)
	}
}

// Cleanup removes lbd's service files and reloads haproxy, so that no
// listener of lbd's remains. The base file and the (now empty) services
// directory stay, so haproxy still starts.
func (b *Backend) Cleanup(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.known, b.foreign = nil, nil
	all, err := readCfgs(b.tree.dir)
	if err != nil {
		return err
	}
	cur, foreign := splitOwn(unpack(all))
	pend, err := b.tree.readPending()
	if err != nil {
		return err
	}
	if err := b.publish(ctx, Files{}, cur, foreign, pend); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	return nil
}

// publish makes files the services directory's contents and has haproxy
// serve them, or changes nothing and returns an error. pend is the reload
// marker found at the start of the call (nil: none): haproxy was not
// confirmed to serve what the directory holds, so a reload is owed even
// when files equal cur.
//
// The marker is written durably before the directory is pointed at the
// new generation and removed only once the reload is confirmed, so a crash
// anywhere in between leaves it behind for the next pass (of this process
// or the next) to find.
//
// cur holds lbd's files of the directory, foreign the operator's .cfg
// files: they are carried into the new generation and validated with
// files, since haproxy loads them too.
func (b *Backend) publish(ctx context.Context, files, cur, foreign Files, pend *pending) error {
	if files.Equal(cur) && pend == nil {
		return nil
	}
	if pend != nil {
		confirmed, err := b.settle(ctx, pend)
		switch {
		case errors.Is(err, errPendingFailed):
			// haproxy is done with the files: rolling back is safe now.
			prev := ""
			if b.tree.exists(pend.Prev) {
				prev = pend.Prev
			}
			if gen := b.tree.current(); gen != prev {
				if rerr := b.rollback(prev); rerr != nil {
					return errors.Join(err, fmt.Errorf("roll back to the previous files: %w", rerr))
				}
				if gen != "" {
					os.RemoveAll(gen)
				}
			}
			b.log.Error("pending reload failed; previous files restored", "err", err)
			return errors.Join(&ReloadError{Mode: "master CLI", Err: err}, b.tree.clearPending())
		case err != nil:
			return err
		case confirmed:
			b.log.Info("pending reload confirmed: haproxy serves the published files", "since", pend.Since)
			if err := b.tree.clearPending(); err != nil {
				return err
			}
			b.reloads.Add(1)
			if gen := b.tree.current(); gen != "" {
				b.prune(gen)
			}
			all, err := readCfgs(b.tree.dir)
			if err != nil {
				return err
			}
			cur, foreign = splitOwn(unpack(all))
			pend = nil
			if files.Equal(cur) {
				return nil
			}
		}
	}
	if err := b.tree.adopt(); err != nil {
		return err
	}
	// prev is the last generation haproxy was confirmed to serve: the
	// current one, or, while a reload is owed, the one the marker names.
	prev := b.tree.current()
	if pend != nil {
		prev = ""
		if b.tree.exists(pend.Prev) {
			prev = pend.Prev
		}
	}
	if files.Equal(cur) {
		b.log.Warn("haproxy was not confirmed to load the published files (did lbd stop between publishing and reloading?); reloading",
			"dir", b.tree.dir, "generation", filepath.Base(b.tree.current()), "since", pend.Since)
	} else {
		disk := b.o.layoutOf(files).pack(files)
		gen, err := b.tree.write(disk)
		if err != nil {
			return err
		}
		loaded := maps.Clone(disk)
		maps.Copy(loaded, foreign)
		if err := b.checkCfgFiles(loaded); err != nil {
			os.RemoveAll(gen)
			return err
		}
		if err := b.check(ctx, b.o.BasePath, gen, loaded); err != nil {
			os.RemoveAll(gen)
			return err
		}
		mark := pending{Gen: gen, Prev: prev, Since: time.Now()}
		if st, err := b.probe(ctx); err == nil {
			mark.Master, mark.Reloads, mark.Workers = st.master, st.reloads, st.workers
		}
		if err := b.tree.markPending(mark); err != nil {
			os.RemoveAll(gen)
			return err
		}
		if err := b.tree.point(gen); err != nil {
			os.RemoveAll(gen)
			return errors.Join(err, b.tree.clearPending())
		}
		if err := b.crashed(stepSwapped); err != nil {
			return err
		}
	}
	gen := b.tree.current()
	b.services = len(files)
	if err := b.reload(ctx); err != nil {
		if re := (*ReloadError)(nil); errors.As(err, &re) && re.Pending {
			// haproxy may be reading the files: they and the marker stay.
			b.log.Error("reload not confirmed in time; the new files stay and the next sync confirms or retries", "err", err)
			return err
		}
		if gen != prev {
			if rerr := b.rollback(prev); rerr != nil {
				return errors.Join(err, fmt.Errorf("roll back to the previous files: %w", rerr))
			}
			if gen != "" {
				os.RemoveAll(gen)
			}
		}
		if cerr := b.tree.clearPending(); cerr != nil {
			b.log.Warn("reload marker left behind", "err", cerr)
		}
		b.log.Error("reload failed; previous files restored", "err", err)
		return err
	}
	if err := b.tree.clearPending(); err != nil {
		// haproxy serves the files; a marker left behind costs one more reload.
		b.log.Warn("reload marker left behind; the next sync reloads once more", "err", err)
	}
	b.reloads.Add(1)
	if gen != "" {
		b.prune(gen)
	}
	b.log.Info("haproxy configuration applied", "services", len(files), "generation", filepath.Base(gen))
	return nil
}

// prune removes the generations but keep, logging what it moved to a
// backup rather than delete (lbd did not write it).
func (b *Backend) prune(keep string) {
	moved, err := b.tree.prune(keep)
	for _, m := range moved {
		b.log.Warn("moved what lbd did not write out of an old generation into a backup", "path", m[0], "backup", filepath.Dir(m[1]))
	}
	if err != nil {
		b.log.Warn("old generations left behind", "err", err)
	}
}

// noteForeign logs, once per process and file, the files of the services
// directory that lbd did not write: kept, and loaded by haproxy.
func (b *Backend) noteForeign(foreign Files) {
	for _, name := range foreign.Names() {
		if !b.foreignSeen[name] {
			b.foreignSeen[name] = true
			b.log.Warn("file in the services directory not written by lbd: kept, loaded by haproxy, never deleted", "file", filepath.Join(b.tree.dir, name))
		}
	}
}

// rollback points the services directory back at prev; with no previous
// generation it becomes an empty directory, as before the first sync.
func (b *Backend) rollback(prev string) error {
	if prev != "" {
		return b.tree.point(prev)
	}
	if err := os.Remove(b.tree.dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return os.Mkdir(b.tree.dir, 0o755)
}

// ensureBase writes the default base file when none exists, and makes the
// services directory if it is missing, so that haproxy can start even
// before lbd has a service to serve.
func (b *Backend) ensureBase() error {
	if _, err := os.Stat(b.tree.dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(b.tree.dir, 0o755); err != nil {
			return fmt.Errorf("create services directory: %w", err)
		}
	}
	if _, err := os.Stat(b.o.BasePath); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := writeAtomic(b.o.BasePath, RenderBase(b.o), 0o644); err != nil {
		return fmt.Errorf("write base file: %w", err)
	}
	b.log.Info("wrote default base file", "path", b.o.BasePath)
	return nil
}

// Verify compares the services directory with the files applied renders
// to and returns one line per file missing, unexpected or edited, one if
// the base file is gone, and one if the reload marker says haproxy was not
// confirmed to load the published files (lbd stopped between publishing and
// reloading, or a reload timed out): the next Apply then reloads, or
// confirms the reload that was in progress. It runs no haproxy command.
func (b *Backend) Verify(ctx context.Context, applied []lb.Service) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	all, err := readCfgs(b.tree.dir)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	// The operator's files are not drift: lbd keeps them as they are.
	got, foreign := splitOwn(unpack(all))
	want, err := render(applied, b.o, got, nil)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	pend, err := b.tree.readPending()
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	var drift []string
	if pend != nil {
		drift = append(drift, fmt.Sprintf("reload pending since %s: haproxy was not confirmed to load %s (marker %s)",
			pend.Since.Format(time.RFC3339), b.tree.dir, b.tree.marker))
	}
	if _, err := os.Stat(b.o.BasePath); err != nil {
		drift = append(drift, fmt.Sprintf("base file %s: %v", b.o.BasePath, err))
	}
	lay := b.o.layoutOf(want)
	for _, name := range want.Names() {
		g, ok := got[name]
		switch {
		case foreign[name] != nil || foreign[lay.diskName(name)] != nil:
			// Apply skips the service rather than overwrite the file.
		case !ok:
			drift = append(drift, fmt.Sprintf("file %s: missing", b.where(lay, name)))
		case !bytes.Equal(g, want[name]):
			drift = append(drift, fmt.Sprintf("file %s: edited (differs from what lbd wrote)", b.where(lay, name)))
		}
	}
	for _, name := range got.Names() {
		if _, ok := want[name]; !ok {
			drift = append(drift, fmt.Sprintf("file %s: written by lbd for no applied service", b.where(lay, name)))
		}
	}
	if len(drift) == 0 && !lay.conforms(got, all) {
		drift = append(drift, fmt.Sprintf("files of %s: not laid out as lbd lays out %d services (one file each up to %d, else %d shards)",
			b.tree.dir, len(want), b.o.FilesPerService, b.o.Shards))
	}
	if len(drift) > 0 {
		// The next Apply reads the directory rather than trust what
		// this Backend wrote last.
		b.known, b.foreign = nil, nil
	}
	return drift, nil
}

// where names the place of unit in the services directory: its file, and
// the service when that file is a shard.
func (b *Backend) where(lay layout, unit string) string {
	d := lay.diskName(unit)
	if d == unit {
		return filepath.Join(b.tree.dir, unit)
	}
	return filepath.Join(b.tree.dir, d) + " (service " + serviceOfUnit(unit) + ")"
}

// ConfigError is haproxy rejecting a configuration in "haproxy -c".
type ConfigError struct {
	// Lines are haproxy's alert lines, e.g. "[ALERT] config : parsing
	// [.../default_web.cfg:7] : unknown keyword 'bnd' in 'frontend'
	// section"; all of its output when it printed no alert.
	Lines []string
	// Err is the command's error (usually its exit status).
	Err error
}

func (e *ConfigError) Error() string {
	return "haproxy rejected the configuration: " + strings.Join(e.Lines, "; ")
}

func (e *ConfigError) Unwrap() error { return e.Err }

// pidPrefix matches haproxy's "[ALERT]    (1234) : " line prefix.
var pidPrefix = regexp.MustCompile(`^\[(\w+)\]\s+\(\d+\)\s+:\s+`)

// checkConfig validates the set of files that dir holds with "haproxy -c"
// (not -q: it hides the alerts). haproxy reads a directory's *.cfg files in
// name order as one configuration; it is handed the same bytes as one file
// instead, because haproxy 2.6 needs about 1 ms per file it opens (10 s for
// 10,000 services, against 0.9 s for the same configuration in one file).
// Error lines are mapped back to the service file and its line.
func (b *Backend) checkConfig(ctx context.Context, base, dir string, files Files) error {
	one, err := os.CreateTemp(filepath.Dir(dir), ".validate-*.cfg")
	if err != nil {
		return fmt.Errorf("validate: %w", err)
	}
	defer os.Remove(one.Name())
	type span struct {
		name  string
		first int // first line of the file in one
	}
	var spans []span
	w := bufio.NewWriterSize(one, 1<<20)
	line := 1
	for _, name := range files.Names() {
		body := files[name]
		spans = append(spans, span{name, line})
		w.Write(body)
		line += bytes.Count(body, []byte("\n"))
		if len(body) > 0 && body[len(body)-1] != '\n' {
			w.WriteByte('\n') // a file haproxy reads alone ends its last line
			line++
		}
	}
	if err := errors.Join(w.Flush(), one.Close()); err != nil {
		return fmt.Errorf("validate: %w", err)
	}
	out, err := b.run(ctx, b.o.HaproxyBin, "-c", "-f", base, "-f", one.Name())
	if err == nil {
		return nil
	}
	// "[/x/.validate-1.cfg:123]" -> "[/x/services.d/default_web.cfg:7]".
	where := regexp.MustCompile(regexp.QuoteMeta(one.Name()) + `(:(\d+))?`)
	locate := func(m string) string {
		sub := where.FindStringSubmatch(m)
		n, _ := strconv.Atoi(sub[2])
		if n == 0 {
			return b.tree.dir
		}
		i := sort.Search(len(spans), func(i int) bool { return spans[i].first > n }) - 1
		if i < 0 {
			return m
		}
		at := n - spans[i].first + 1
		loc := fmt.Sprintf("%s:%d", filepath.Join(b.tree.dir, spans[i].name), at)
		if body := files[spans[i].name]; isShard(body) {
			if u := unitAtLine(body, at); u != "" {
				loc += " (service " + serviceOfUnit(u) + ")"
			}
		}
		return loc
	}
	var alerts, all []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		l := strings.TrimSpace(pidPrefix.ReplaceAllString(sc.Text(), "[$1] "))
		if l == "" {
			continue
		}
		l = where.ReplaceAllStringFunc(l, locate)
		all = append(all, l)
		if strings.HasPrefix(l, "[ALERT]") {
			alerts = append(alerts, l)
		}
	}
	if len(alerts) == 0 {
		alerts = all
	}
	if len(alerts) == 0 {
		alerts = []string{err.Error()}
	}
	return &ConfigError{Lines: alerts, Err: err}
}

// MaxArgStrlen is Linux's limit on one argument or environment string of
// execve (MAX_ARG_STRLEN, 32 pages): a longer one fails with E2BIG.
const MaxArgStrlen = 128 << 10

// cfgFilesReserve is left of [MaxArgStrlen] for the files haproxy loads
// before the services directory (haproxy.cfg, the base file).
const cfgFilesReserve = 4 << 10

// checkCfgFiles refuses a set of files whose paths haproxy's master could
// not re-execute with. haproxy 2.6 puts the path of every file it loaded
// into one environment string, HAPROXY_CFGFILES ("<dir>/<file>;..."), and
// keeps it across the re-execution a reload is; past [MaxArgStrlen] execve
// fails with "Argument list too long", the master logs "Failed to
// reexecute the master process" and exits, and haproxy is gone. Refusing
// the files before they are published keeps the running haproxy serving
// the previous ones.
func (b *Backend) checkCfgFiles(files Files) error {
	if b.cfgLimit <= 0 {
		return nil
	}
	n := cfgFilesReserve
	for name := range files {
		n += len(b.tree.dir) + 1 + len(name) + 1
	}
	if n <= b.cfgLimit {
		return nil
	}
	return &ConfigError{
		Lines: []string{fmt.Sprintf("%d files in %s: haproxy's HAPROXY_CFGFILES would be about %d bytes, over the %d bytes execve takes in one string; haproxy's master could not re-execute (reload) with them and would exit",
			len(files), b.tree.dir, n, b.cfgLimit)},
		Err: ErrTooManyFiles,
	}
}

// ErrTooManyFiles is wrapped by the [ConfigError] of a set of files too
// large for haproxy 2.6's master to reload with (see [MaxArgStrlen]).
var ErrTooManyFiles = errors.New("too many files for haproxy's master to re-execute with")
