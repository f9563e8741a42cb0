package haproxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lbd/lbd/lb"
)

// Explain says how haproxy serves port p of the applied service s at
// addr: the service's file, the frontend and backend named
// [ProxyName], their bind, source-range ACL, balance and servers, both as
// Render makes them of s (Want) and as the file in the services directory
// holds them now (Have). When the stats socket answers, each server of
// Have carries the running haproxy's state of it ("UP", "DOWN", "MAINT",
// ...). Have.Drift says when the file differs from Render's, when the
// frontend does not bind addr, and when the running haproxy lacks the
// backend or one of its servers (not reloaded). It changes nothing.
func (b *Backend) Explain(ctx context.Context, s *lb.Service, p lb.Port, addr netip.Addr) (lb.Explanation, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	name := FileName(s.Namespace, s.Name)
	files, err := Render([]lb.Service{*s}, b.o)
	if err != nil {
		return lb.Explanation{}, fmt.Errorf("explain %s: %w", p.Key(s), err)
	}
	path, got, err := b.readUnit(name)
	proxy := ProxyName(s, p)
	want, _ := readProxy(files[name], path, proxy, addr, p.Port)
	e := lb.Explanation{Backend: b.Name(), Want: want}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		e.Have = lb.Live{Affinity: lb.AffinityNone, Drift: []string{"file " + path + " is missing"}}
		return e, nil
	case err != nil:
		return lb.Explanation{}, fmt.Errorf("explain %s: %w", p.Key(s), err)
	}
	var servers []string
	e.Have, servers = readProxy(got, path, proxy, addr, p.Port)
	if !bytes.Equal(got, files[name]) {
		e.Have.Drift = append(e.Have.Drift, "file "+path+" differs from what lbd renders of the applied service")
	}
	b.runtimeState(ctx, &e.Have, proxy, servers)
	return e, nil
}

// readUnit returns service unit name as the services directory holds it,
// in its own file or in its shard, and the path of that file; an error
// wrapping fs.ErrNotExist (and the path of its own file) when neither
// holds it.
func (b *Backend) readUnit(name string) (string, []byte, error) {
	own := filepath.Join(b.tree.dir, name)
	got, err := os.ReadFile(own)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return own, got, err
	}
	shard := filepath.Join(b.tree.dir, layout{shards: b.o.Shards}.diskName(name))
	sb, serr := os.ReadFile(shard)
	if serr != nil {
		return own, nil, err
	}
	if u, ok := splitShard(sb)[name]; ok {
		return shard, u, nil
	}
	return own, nil, err
}

// readProxy reads the frontend and backend proxy of an lbd file at path,
// and returns the names of the backend's servers, in the order of the
// endpoints.
func readProxy(file []byte, path, proxy string, addr netip.Addr, port uint16) (lb.Live, []string) {
	l := lb.Live{Affinity: lb.AffinityNone}
	if file == nil {
		// Render writes no file: the service has no port haproxy serves.
		return l, nil
	}
	var servers []string
	l.Objects = append(l.Objects, lb.LiveObject{Kind: "file", Name: path, Present: true})
	bind := hostPort(addr.Unmap(), strconv.Itoa(int(port)))
	var section string
	front := lb.LiveObject{Kind: "frontend", Name: proxy}
	back := lb.LiveObject{Kind: "backend", Name: proxy}
	sc := bufio.NewScanner(bytes.NewReader(file))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) == 2 && (f[0] == "frontend" || f[0] == "backend") {
			section = f[0] + " " + f[1]
			if f[1] == proxy {
				if f[0] == "frontend" {
					front.Present = true
				} else {
					back.Present = true
				}
			}
			continue
		}
		switch {
		case section == "frontend "+proxy && f[0] == "bind" && len(f) > 1 && f[1] == bind:
			front.Detail = "bind " + bind
		case section == "frontend "+proxy && f[0] == "acl" && len(f) > 3 && f[1] == "lbd_source_ranges" && f[2] == "src":
			for _, r := range f[3:] {
				if pr, err := netip.ParsePrefix(r); err == nil {
					l.SourceRanges = append(l.SourceRanges, pr)
				}
			}
		case section == "backend "+proxy && len(f) == 3 && f[0] == "stick" && f[1] == "on" && f[2] == "src":
			l.Affinity = lb.AffinityClientIP
		case section == "backend "+proxy && f[0] == "stick-table":
			if i := slices.Index(f, "expire"); i >= 0 && i+1 < len(f) {
				if d, err := time.ParseDuration(f[i+1]); err == nil {
					l.AffinityTimeout = d
				}
			}
		case section == "backend "+proxy && f[0] == "server" && len(f) > 2:
			// A free slot holds the placeholder address, disabled.
			if ap, err := netip.ParseAddrPort(f[2]); err == nil && ap != placeholder && !slices.Contains(f, "disabled") {
				l.Endpoints = append(l.Endpoints, lb.LiveEndpoint{Addr: ap})
				servers = append(servers, f[1])
			}
		}
	}
	if front.Present && front.Detail == "" {
		l.Drift = append(l.Drift, "frontend "+proxy+" does not bind "+bind)
	}
	back.Detail = strconv.Itoa(len(l.Endpoints)) + " servers"
	l.Objects = append(l.Objects, front, back)
	l.Rejects = back.Present && len(l.Endpoints) == 0
	return l, servers
}

// runtimeState asks the stats socket for proxy's servers and, when it
// answers, makes them l's endpoints: what the running haproxy does, which
// may not be the file yet. servers names the file's servers, in the order
// of l's endpoints; a server in one and not the other is drift (haproxy
// not reloaded). An unreachable socket is reported as an object that is
// not there, and the file's servers stay.
func (b *Backend) runtimeState(ctx context.Context, l *lb.Live, proxy string, servers []string) {
	out, err := masterCLI{path: b.o.StatsSocket}.command(ctx, "show servers state "+proxy)
	rt := lb.LiveObject{Kind: "runtime", Name: "stats socket " + b.o.StatsSocket, Present: err == nil}
	defer func() { l.Objects = append(l.Objects, rt) }()
	if err != nil {
		rt.Detail = err.Error()
		return
	}
	rt.Detail = "show servers state " + proxy
	running, err := parseBackendServers(out)
	if err != nil {
		l.Drift = append(l.Drift, "the running haproxy has no backend "+proxy+" (not reloaded?): "+err.Error())
		return
	}
	inFile := map[string]bool{}
	for _, srv := range servers {
		inFile[srv] = true
		if !slices.ContainsFunc(running, func(r runningServer) bool { return r.name == srv }) {
			l.Drift = append(l.Drift, "server "+srv+" of the file is not in the running haproxy (not reloaded?)")
		}
	}
	l.Endpoints = l.Endpoints[:0]
	for _, r := range running {
		if r.addr == placeholder {
			continue // a free slot
		}
		if !inFile[r.name] {
			l.Drift = append(l.Drift, "the running haproxy has server "+r.name+", which the file has not (not reloaded?)")
		}
		l.Endpoints = append(l.Endpoints, lb.LiveEndpoint{Addr: r.addr, State: r.state})
	}
	l.Rejects = len(l.Endpoints) == 0
}

// runningServer is one server of "show servers state".
type runningServer struct {
	name, state string
	addr        netip.AddrPort
}

// parseBackendServers reads "show servers state <backend>" (format 1): a
// version line, a "# be_id be_name srv_id srv_name srv_addr srv_op_state
// srv_admin_state ... srv_port ..." header, then a line per server.
// haproxy's one-line complaint (an unknown backend) is the error.
func parseBackendServers(out []byte) ([]runningServer, error) {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[1], "# ") {
		return nil, fmt.Errorf("haproxy: %s", strings.TrimSpace(string(out)))
	}
	col := map[string]int{}
	for i, h := range strings.Fields(strings.TrimPrefix(lines[1], "# ")) {
		col[h] = i
	}
	need := []string{"srv_name", "srv_addr", "srv_port", "srv_op_state", "srv_admin_state"}
	last := 0
	for _, c := range need {
		i, ok := col[c]
		if !ok {
			return nil, fmt.Errorf("haproxy: show servers state has no column %s", c)
		}
		last = max(last, i)
	}
	var out2 []runningServer
	for _, line := range lines[2:] {
		f := strings.Fields(line)
		if len(f) <= last {
			continue
		}
		r := runningServer{name: f[col["srv_name"]], state: serverState(f[col["srv_op_state"]], f[col["srv_admin_state"]])}
		if a, err := netip.ParseAddr(f[col["srv_addr"]]); err == nil {
			if p, err := strconv.ParseUint(f[col["srv_port"]], 10, 16); err == nil {
				r.addr = netip.AddrPortFrom(a, uint16(p))
			}
		}
		out2 = append(out2, r)
	}
	return out2, nil
}

// serverState names a server's state from srv_op_state (0 stopped, 1
// starting, 2 running, 3 stopping) and srv_admin_state (maintenance and
// drain flags) as haproxy's stats page would.
func serverState(op, admin string) string {
	a, _ := strconv.Atoi(admin)
	switch {
	case a&(0x01|0x02|0x04|0x20|0x40) != 0:
		return "MAINT"
	case a&(0x08|0x10) != 0:
		return "DRAIN"
	}
	switch op {
	case "0":
		return "DOWN"
	case "1":
		return "STARTING"
	case "2":
		return "UP"
	case "3":
		return "STOPPING"
	}
	return "op " + op
}
