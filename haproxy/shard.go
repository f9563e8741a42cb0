package haproxy

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
)

// Layout on disk. Everything above the disk works with one unit per
// service, keyed by [FileName]: rendered, compared, changed at runtime
// and verified unit by unit. On disk the units are either one file each
// (up to [Options.FilesPerService] services: "cat
// services.d/default_web.cfg") or, for larger sets, grouped into
// [Options.Shards] shard files "lbd-shard-NNN.cfg", a unit's shard chosen by
// a hash of its name. A shard holds a header line, then its units in name
// order, each exactly the bytes the unit's own file would hold.
//
// Two reasons to shard. haproxy 2.6's master keeps the path of every file it
// loaded in one environment string (HAPROXY_CFGFILES) and re-executes itself
// with it on every reload: past 128 KiB, about 2,500 service files, execve
// fails and the master exits (see [MaxArgStrlen]). And it spends about 1 ms
// opening each file, so 10,000 files cost seconds per reload; 256 shards
// cost a fraction of that.
//
// Reading undoes the layout, whichever it is: a shard file is split back
// into its units, so a directory written with either layout (or by an lbd
// with other options) reads as the same units.

// DefaultFilesPerService and DefaultShards are the defaults of
// [Options.FilesPerService] and [Options.Shards].
const (
	DefaultFilesPerService = 1000
	DefaultShards          = 256
)

// ShardName returns the file name of shard i: "lbd-shard-007.cfg".
func ShardName(i int) string { return fmt.Sprintf("lbd-shard-%03d.cfg", i) }

// shardHeader is the first line of shard i of n. ownFile knows it.
func shardHeader(i, n int) string {
	return fmt.Sprintf("# Shard %03d of %d of lbd's services, written by lbd: edits are overwritten on the next sync.\n", i, n)
}

// layout says where each unit goes on disk: shards 0 means a file per
// unit, otherwise that many shard files.
type layout struct{ shards int }

// layoutOf returns the layout o gives a set of units (lbd's files, logical).
func (o Options) layoutOf(units Files) layout {
	o = o.withDefaults()
	n := 0
	for name := range units {
		if isServiceUnit(name) {
			n++
		}
	}
	if n <= o.FilesPerService {
		return layout{}
	}
	return layout{shards: o.Shards}
}

// isServiceUnit reports whether name is a service's unit name, the one
// [FileName] makes ("<namespace>_<name>.cfg", both RFC 1123 labels, which
// hold no '_'), as opposed to [PeersFile] or a file of the operator's.
func isServiceUnit(name string) bool {
	base, ok := strings.CutSuffix(name, ".cfg")
	if !ok || name == PeersFile {
		return false
	}
	ns, svc, ok := strings.Cut(base, "_")
	return ok && ns != "" && svc != "" && !strings.Contains(svc, "_")
}

// diskName returns the file that holds unit on disk.
func (l layout) diskName(unit string) string {
	if l.shards == 0 || !isServiceUnit(unit) {
		return unit
	}
	return ShardName(l.shardOf(unit))
}

func (l layout) shardOf(unit string) int {
	h := fnv.New32a()
	h.Write([]byte(unit))
	return int(h.Sum32() % uint32(l.shards))
}

// pack returns the files on disk for units.
func (l layout) pack(units Files) Files { return l.packOnly(units, nil) }

// packOnly is pack limited to the disk files named in only (nil: all).
func (l layout) packOnly(units Files, only map[string]bool) Files {
	out := Files{}
	if l.shards == 0 {
		for name, b := range units {
			if only == nil || only[name] {
				out[name] = b
			}
		}
		return out
	}
	groups := map[int][]string{}
	for name, b := range units {
		d := l.diskName(name)
		if only != nil && !only[d] {
			continue
		}
		if !isServiceUnit(name) {
			out[name] = b
			continue
		}
		i := l.shardOf(name)
		groups[i] = append(groups[i], name)
	}
	for i, names := range groups {
		slices.Sort(names)
		var buf bytes.Buffer
		buf.WriteString(shardHeader(i, l.shards))
		for _, name := range names {
			buf.Write(units[name])
		}
		out[ShardName(i)] = buf.Bytes()
	}
	return out
}

// isShard reports whether b is a shard file lbd wrote.
func isShard(b []byte) bool {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return bytes.HasPrefix(line, []byte("# Shard ")) && bytes.Contains(line, []byte(", written by lbd: "))
}

// unitHeader is how every unit begins (see renderService).
var unitHeader = []byte("# Service ")

// splitShard returns the units of shard file b by name, or nil when b is
// not a well-formed shard (text before its first unit, a unit header that
// names no service): such a file is kept whole, as one file of lbd's that
// no service renders to, so that it is reported and replaced.
func splitShard(b []byte) map[string][]byte {
	_, body, _ := bytes.Cut(b, []byte("\n"))
	if len(body) == 0 {
		return map[string][]byte{}
	}
	if !bytes.HasPrefix(body, unitHeader) {
		return nil
	}
	var starts []int
	for off := 0; off < len(body); {
		starts = append(starts, off)
		i := bytes.Index(body[off+1:], append([]byte("\n"), unitHeader...))
		if i < 0 {
			break
		}
		off += 1 + i + 1
	}
	units := make(map[string][]byte, len(starts))
	for k, s := range starts {
		e := len(body)
		if k+1 < len(starts) {
			e = starts[k+1]
		}
		u := body[s:e:e]
		name, ok := unitName(u)
		if !ok {
			return nil
		}
		if _, dup := units[name]; dup {
			return nil
		}
		units[name] = u
	}
	return units
}

// unitName returns the unit name of a unit by its header line, "# Service
// <namespace>/<name>, written by lbd: ...".
func unitName(u []byte) (string, bool) {
	line, _, _ := bytes.Cut(u, []byte("\n"))
	rest, ok := bytes.CutPrefix(line, unitHeader)
	if !ok {
		return "", false
	}
	key, _, ok := bytes.Cut(rest, []byte(", written by lbd: "))
	if !ok {
		return "", false
	}
	ns, name, ok := strings.Cut(string(key), "/")
	if !ok || !isServiceUnit(FileName(ns, name)) {
		return "", false
	}
	return FileName(ns, name), true
}

// unpack returns the units of the files on disk: every shard split into
// its units, every other file as it is. A unit whose name a file on disk
// also bears is left out: the file on disk wins, as a file of the
// operator's bearing a service's name does.
func unpack(disk Files) Files {
	out := make(Files, len(disk))
	var shards []string
	for name, b := range disk {
		if isShard(b) {
			shards = append(shards, name)
			continue
		}
		out[name] = b
	}
	for _, name := range shards {
		units := splitShard(disk[name])
		if units == nil {
			out[name] = disk[name]
			continue
		}
		for u, b := range units {
			if _, taken := out[u]; !taken {
				out[u] = b
			}
		}
	}
	return out
}

// serviceOfUnit returns "<namespace>/<name>" for a unit name.
func serviceOfUnit(unit string) string {
	base := strings.TrimSuffix(unit, ".cfg")
	return strings.Replace(base, "_", "/", 1)
}

// conforms reports whether the files lbd wrote on disk (among disk, all
// the directory's files) are exactly the ones l makes of units, the
// directory's own units read back: false after the layout changed (the
// options did, or the set crossed [Options.FilesPerService]) with nothing
// else to publish, which is then published anyway.
func (l layout) conforms(units, disk Files) bool {
	want := map[string]bool{}
	for name := range units {
		want[l.diskName(name)] = true
	}
	n := 0
	for name, b := range disk {
		if !ownFile(b) {
			continue
		}
		if !want[name] {
			return false
		}
		n++
	}
	return n == len(want)
}

// unitAtLine returns the name of the unit of shard b that holds line n
// (1-based), or "" when none does (the header).
func unitAtLine(b []byte, n int) string {
	unit := ""
	for i, line := range bytes.SplitAfter(b, []byte("\n")) {
		if i+1 > n {
			break
		}
		if name, ok := unitName(line); ok {
			unit = name
		}
	}
	return unit
}
