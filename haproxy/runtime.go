package haproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Endpoint changes go through haproxy's runtime API on the stats socket:
// every backend has a fixed number of server slots (see [SlotName]), and
// a change of what a slot holds is "set server <b>/<s> addr", "set weight"
// and "set server <b>/<s> state ready|maint" on the running workers. The
// files are rewritten too, so that a reload or a restart loads the same
// state.

// Admin state bits of "show servers state" (haproxy's SRV_ADMF_*). The
// "disabled" keyword sets FMAINT and CMAINT; "state ready" clears FMAINT
// and leaves CMAINT, which alone does not hold the server down.
const (
	admFMaint = 0x01
	admIMaint = 0x02
	admFDrain = 0x08
	admIDrain = 0x10
	admRMaint = 0x20
	admHMaint = 0x40
	admMaint  = admFMaint | admIMaint | admRMaint | admHMaint
	admDrain  = admFDrain | admIDrain
)

// liveServer is one server as "show servers state" reports it.
type liveServer struct {
	addr    netip.Addr
	port    uint16
	admin   int
	uweight int
}

// parseServersState reads "show servers state" output (format 1) into
// backend -> server -> state.
func parseServersState(out string) (map[string]map[string]liveServer, error) {
	got := map[string]map[string]liveServer{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	first := true
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if first {
			first = false
			if line != "1" {
				return nil, fmt.Errorf("show servers state: format %q, want 1", line)
			}
			continue
		}
		f := strings.Fields(line)
		if len(f) < 19 {
			// An unknown backend is answered with a message, not a table.
			return nil, fmt.Errorf("show servers state: %q", line)
		}
		var s liveServer
		s.addr, _ = netip.ParseAddr(f[4])
		s.admin, _ = strconv.Atoi(f[6])
		s.uweight, _ = strconv.Atoi(f[7])
		p, _ := strconv.ParseUint(f[18], 10, 16)
		s.port = uint16(p)
		if got[f[1]] == nil {
			got[f[1]] = map[string]liveServer{}
		}
		got[f[1]][f[3]] = s
	}
	if first && strings.TrimSpace(out) != "" {
		return nil, fmt.Errorf("show servers state: %q", strings.TrimSpace(out))
	}
	return got, sc.Err()
}

// slotCommands returns the runtime commands that make server srv of
// backend be hold want; none when it already does. The address is set
// before the slot is made ready, so it never serves a stale address.
func slotCommands(backend, srv string, want slot, got liveServer) []string {
	id := backend + "/" + srv
	maint := got.admin&admMaint != 0
	if want.state == slotFree {
		if maint {
			return nil
		}
		return []string{"set server " + id + " state maint"}
	}
	var cmds []string
	if got.addr.Unmap() != want.addr.Addr().Unmap() || got.port != want.addr.Port() {
		cmds = append(cmds, fmt.Sprintf("set server %s addr %s port %d", id, want.addr.Addr(), want.addr.Port()))
	}
	w := 1
	if want.state == slotDrain {
		w = 0
	}
	if got.uweight != w {
		cmds = append(cmds, fmt.Sprintf("set weight %s %d", id, w))
	}
	if maint || got.admin&admDrain != 0 {
		cmds = append(cmds, "set server "+id+" state ready")
	}
	return cmds
}

// errNotRuntime says the running haproxy lacks a backend or slot the files
// name: only a reload can make it serve them.
var errNotRuntime = errors.New("the running haproxy does not have the backends and slots of the files")

// syncRuntime makes the running workers' servers hold what the slots of
// files say: for the files named by names, or for all of them when names
// is nil (one "show servers state" for everything, as after a restart of
// lbd, when a runtime change may have been made and its file not
// written). It returns how many commands it sent. An error wrapping
// errNotRuntime means the files' structure is not the running one.
func (b *Backend) syncRuntime(ctx context.Context, files Files, names []string) (int, error) {
	type backendSlots struct {
		proxy string
		slots []slot
	}
	var want []backendSlots
	add := func(name string) {
		_, slots := parseSlots(files[name])
		for _, proxy := range slices.Sorted(maps.Keys(slots)) {
			want = append(want, backendSlots{proxy, slots[proxy]})
		}
	}
	var live map[string]map[string]liveServer
	if names == nil {
		for _, name := range files.Names() {
			add(name)
		}
		out, err := b.stats(ctx, "show servers state")
		if err != nil {
			return 0, err
		}
		if live, err = parseServersState(out); err != nil {
			return 0, err
		}
	} else {
		live = map[string]map[string]liveServer{}
		for _, name := range names {
			add(name)
		}
		for _, w := range want {
			out, err := b.stats(ctx, "show servers state "+w.proxy)
			if err != nil {
				return 0, err
			}
			got, err := parseServersState(out)
			if err != nil {
				return 0, fmt.Errorf("backend %s: %w: %w", w.proxy, errNotRuntime, err)
			}
			live[w.proxy] = got[w.proxy]
		}
	}
	var cmds []string
	for _, w := range want {
		got, ok := live[w.proxy]
		if !ok || len(got) != len(w.slots) {
			return 0, fmt.Errorf("backend %s: %d servers running, %d slots in the files: %w", w.proxy, len(got), len(w.slots), errNotRuntime)
		}
		for i, sl := range w.slots {
			srv := SlotName(i + 1)
			g, ok := got[srv]
			if !ok {
				return 0, fmt.Errorf("backend %s: no server %s running: %w", w.proxy, srv, errNotRuntime)
			}
			cmds = append(cmds, slotCommands(w.proxy, srv, sl, g)...)
		}
	}
	for i, c := range cmds {
		out, err := b.stats(ctx, c)
		if err != nil {
			return i, fmt.Errorf("runtime API %q: %w", c, err)
		}
		if !runtimeOK(out) {
			return i, fmt.Errorf("runtime API %q: haproxy answered %q", c, strings.TrimSpace(out))
		}
	}
	return len(cmds), nil
}

// runtimeOK reports whether haproxy's answer to a "set server" or "set
// weight" command says it took: nothing, or a note of what changed.
func runtimeOK(out string) bool {
	out = strings.TrimSpace(out)
	return out == "" || strings.Contains(out, "changed from") || strings.HasPrefix(out, "No need to change")
}

// statsCommand is the default stats: one command on the stats socket.
func (b *Backend) statsCommand(ctx context.Context, cmd string) (string, error) {
	out, err := masterCLI{path: b.o.StatsSocket}.command(ctx, cmd)
	return string(out), err
}

// runtimeOnly returns the names of the files that differ between cur and
// next, and whether every difference is one the runtime API can make:
// both sides have the file, it is a service's, and only what its slots
// hold differs.
func runtimeOnly(cur, next Files) ([]string, bool) {
	var names []string
	for name, b := range next {
		c, ok := cur[name]
		if ok && string(c) == string(b) {
			continue
		}
		if !ok || name == PeersFile {
			return nil, false
		}
		k1, _ := parseSlots(c)
		k2, _ := parseSlots(b)
		if string(k1) != string(k2) {
			return nil, false
		}
		names = append(names, name)
	}
	for name := range cur {
		if _, ok := next[name]; !ok {
			return nil, false
		}
	}
	slices.Sort(names)
	return names, true
}
