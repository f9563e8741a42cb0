package haproxy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/lbd/lbd/lb"
)

// services returns n copies of nginx named svc-0..svc-<n-1>, with ports
// of their own.
func services(n int) []lb.Service {
	var svcs []lb.Service
	for i := range n {
		s := nginx()
		s.Name = fmt.Sprintf("svc-%d", i)
		s.Ports[0].Port = uint16(8000 + i)
		svcs = append(svcs, s)
	}
	lb.SortServices(svcs)
	return svcs
}

func stringFiles(f Files) map[string]string {
	m := map[string]string{}
	for k, v := range f {
		m[k] = string(v)
	}
	return m
}

// TestShardPackUnpack: a sharded set reads back as exactly its units, and
// every shard is lbd's, begins with its header and holds only its own
// units.
func TestShardPackUnpack(t *testing.T) {
	svcs := services(20)
	svcs[3].Affinity = lb.AffinityClientIP // a peers file too
	units, err := Render(svcs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	l := layout{shards: 4}
	disk := l.pack(units)
	if len(disk) > 5 {
		t.Fatalf("%d files for 4 shards and the peers file: %v", len(disk), disk.Names())
	}
	if _, ok := disk[PeersFile]; !ok {
		t.Errorf("peers file not kept by its own name: %v", disk.Names())
	}
	for name, b := range disk {
		if !ownFile(b) {
			t.Errorf("%s is not recognized as lbd's", name)
		}
		if name == PeersFile {
			continue
		}
		var i int
		if _, err := fmt.Sscanf(name, "lbd-shard-%03d.cfg", &i); err != nil || !bytes.HasPrefix(b, []byte(shardHeader(i, 4))) {
			t.Errorf("%s: not a shard with its header: %q", name, b[:min(80, len(b))])
		}
		for u := range splitShard(b) {
			if l.diskName(u) != name {
				t.Errorf("unit %s in %s, its shard is %s", u, name, l.diskName(u))
			}
		}
	}
	if d := cmp.Diff(stringFiles(units), stringFiles(unpack(disk))); d != "" {
		t.Errorf("unpack(pack(units)) differs (-units +read back):\n%s", d)
	}
	// One file per service reads back the same.
	if d := cmp.Diff(stringFiles(units), stringFiles(unpack(layout{}.pack(units)))); d != "" {
		t.Errorf("unsharded read back differs:\n%s", d)
	}
}

// TestSplitShardMalformed: a shard with text before its first unit, or a
// unit header naming no service, is kept whole (lbd's file for no
// service), never read as units it does not hold.
func TestSplitShardMalformed(t *testing.T) {
	units, _ := Render(services(2), Options{})
	good := layout{shards: 1}.pack(units)[ShardName(0)]
	hdr, body, _ := bytes.Cut(good, []byte("\n"))
	for name, b := range map[string][]byte{
		"text before the first unit":      append(append(append([]byte{}, hdr...), "\nbackend x\n"...), body...),
		"a unit header naming no service": append(append([]byte{}, good...), "# Service nonsense, written by lbd: x\n"...),
	} {
		t.Run(name, func(t *testing.T) {
			if u := splitShard(b); u != nil {
				t.Fatalf("splitShard = %d units, want nil", len(u))
			}
			got := unpack(Files{ShardName(0): b})
			if len(got) != 1 || !bytes.Equal(got[ShardName(0)], b) {
				t.Errorf("unpack = %v, want the shard kept whole", got.Names())
			}
		})
	}
}

// TestApplySharded: past FilesPerService, Apply writes shards only (and
// haproxy -c accepts them), Verify finds nothing, a hand edit inside a
// shard is reported with the service's name and repaired, and an endpoint
// change goes through the runtime API into the shard, with no reload.
func TestApplySharded(t *testing.T) {
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Skipf("SKIP: haproxy is not installed: %v", err)
	}
	b, c := fakeBackend(t, true)
	b.o.User, b.o.Group = "-", "-"
	b.o.FilesPerService, b.o.Shards = 3, 4
	svcs := services(10)
	if _, err := b.Apply(t.Context(), svcs, nil); err != nil {
		t.Fatal(err)
	}
	disk := onDisk(t, b)
	for name := range disk {
		if !strings.HasPrefix(name, "lbd-shard-") {
			t.Errorf("file %s in a sharded set", name)
		}
	}
	want, _ := Render(svcs, b.o)
	if d := cmp.Diff(stringFiles(want), stringFiles(unpack(disk))); d != "" {
		t.Fatalf("the shards do not hold the rendered units:\n%s", d)
	}
	if drift, err := b.Verify(t.Context(), svcs); err != nil || len(drift) > 0 {
		t.Fatalf("Verify after Apply = %v, %v", drift, err)
	}

	// A hand edit inside one shard.
	victim := FileName("default", "svc-7")
	shard := filepath.Join(b.o.Dir, layout{shards: 4}.diskName(victim))
	sb, _ := os.ReadFile(shard)
	edited := bytes.Replace(sb, []byte("balance roundrobin"), []byte("balance leastconn"), 1)
	if err := os.WriteFile(shard, edited, 0o644); err != nil {
		t.Fatal(err)
	}
	drift, err := b.Verify(t.Context(), svcs)
	if err != nil || len(drift) != 1 || !strings.Contains(drift[0], shard) || !strings.Contains(drift[0], "(service default/") || !strings.Contains(drift[0], "edited") {
		t.Fatalf("Verify after an edit in %s = %q, %v; want one line naming the shard and the service", shard, drift, err)
	}
	if _, err := b.Apply(t.Context(), svcs, nil); err != nil {
		t.Fatal(err)
	}
	if drift, _ := b.Verify(t.Context(), svcs); len(drift) > 0 {
		t.Fatalf("Apply did not repair the shard: %v", drift)
	}

	// An endpoint change: runtime API, the shard rewritten, no reload.
	reloads, cmds := c.reloads, 0
	prev := unpack(onDisk(t, b))
	fakeStats(b, &cmds)
	b.synced = true
	svcs[4].Ports[0].Endpoints[2].Ready, svcs[4].Ports[0].Endpoints[2].Serving = true, true
	if _, err := b.Apply(t.Context(), svcs, nil); err != nil {
		t.Fatal(err)
	}
	if c.reloads != reloads || cmds == 0 {
		t.Errorf("endpoint change: %d reloads, %d runtime commands; want none and some", c.reloads-reloads, cmds)
	}
	want, _ = render(svcs, b.o, prev, nil) // the endpoints keep their slots
	if d := cmp.Diff(stringFiles(want), stringFiles(unpack(onDisk(t, b)))); d != "" {
		t.Errorf("the runtime change did not reach the shard on disk:\n%s", d)
	}
}

// TestLayoutChangeRepublishes: a directory of one file per service, read
// by a Backend that shards such a set, is reported by Verify and
// republished as shards by Apply, with no per-service file left; and back.
func TestLayoutChangeRepublishes(t *testing.T) {
	b, c := fakeBackend(t, false)
	svcs := services(6)
	if _, err := b.Apply(t.Context(), svcs, nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := onDisk(t, b)[FileName("default", "svc-0")]; !ok {
		t.Fatalf("6 services under the default FilesPerService are not a file each: %v", onDisk(t, b).Names())
	}
	for _, tc := range []struct {
		perService int
		wantPrefix string
	}{{2, "lbd-shard-"}, {100, "default_"}} {
		b2 := New(b.o, nil)
		b2.o.FilesPerService = tc.perService
		b2.bindable, b2.check, b2.reload = b.bindable, b.check, b.reload
		drift, err := b2.Verify(t.Context(), svcs)
		if err != nil || len(drift) != 1 || !strings.Contains(drift[0], "not laid out") {
			t.Fatalf("FilesPerService %d: Verify = %q, %v; want the layout reported", tc.perService, drift, err)
		}
		before := c.reloads
		if _, err := b2.Apply(t.Context(), svcs, nil); err != nil {
			t.Fatal(err)
		}
		if c.reloads != before+1 {
			t.Errorf("FilesPerService %d: %d reloads, want 1", tc.perService, c.reloads-before)
		}
		for name := range onDisk(t, b2) {
			if !strings.HasPrefix(name, tc.wantPrefix) {
				t.Errorf("FilesPerService %d: %s left in the directory", tc.perService, name)
			}
		}
		if drift, _ := b2.Verify(t.Context(), svcs); len(drift) > 0 {
			t.Errorf("FilesPerService %d: drift after Apply: %v", tc.perService, drift)
		}
	}
}

// TestForeignFileWithAShardsName: a file of the operator's named like a
// shard is kept and loaded; the services that shard would hold are
// skipped by name with the reason, the others served.
func TestForeignFileWithAShardsName(t *testing.T) {
	b, _ := fakeBackend(t, false)
	b.o.FilesPerService, b.o.Shards = 1, 2
	if err := os.MkdirAll(b.o.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	mine := "backend operators_own\n    mode tcp\n"
	write(t, filepath.Join(b.o.Dir, ShardName(0)), mine)
	svcs := services(8)
	skipped, err := b.Apply(t.Context(), svcs, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := layout{shards: 2}
	wantSkipped := 0
	for i := range svcs {
		if l.diskName(FileName(svcs[i].Namespace, svcs[i].Name)) == ShardName(0) {
			wantSkipped++
		}
	}
	if wantSkipped == 0 || wantSkipped == len(svcs) {
		t.Fatalf("test needs services in both shards, %d of %d in shard 0", wantSkipped, len(svcs))
	}
	if len(skipped) != wantSkipped {
		t.Fatalf("skipped %v, want the %d services of shard 0", skipped, wantSkipped)
	}
	for _, s := range skipped {
		if !strings.Contains(s.Reason, ShardName(0)) || !strings.Contains(s.Reason, "not written by lbd") {
			t.Errorf("reason %q does not name the operator's file", s.Reason)
		}
	}
	disk := onDisk(t, b)
	if string(disk[ShardName(0)]) != mine {
		t.Errorf("the operator's %s was changed: %q", ShardName(0), disk[ShardName(0)])
	}
	if _, ok := disk[ShardName(1)]; !ok {
		t.Errorf("shard 1 not written: %v", disk.Names())
	}
}

// TestCheckConfigNamesTheServiceInAShard: haproxy's complaint about a line
// of a shard names the shard, the line in it and the service.
func TestCheckConfigNamesTheServiceInAShard(t *testing.T) {
	b, o := checkingBackend(t)
	units, _ := Render(services(5), o)
	bad := FileName("default", "svc-3")
	units[bad] = bytes.Replace(units[bad], []byte("balance roundrobin"), []byte("balance nonsense"), 1)
	disk := layout{shards: 1}.pack(units)
	line := 1 + bytes.Count(disk[ShardName(0)][:bytes.Index(disk[ShardName(0)], []byte("balance nonsense"))], []byte("\n"))
	gen := filepath.Join(t.TempDir(), "gen")
	os.Mkdir(gen, 0o755)
	err := b.checkConfig(t.Context(), o.BasePath, gen, disk)
	want := fmt.Sprintf("%s:%d (service default/svc-3)", filepath.Join(o.Dir, ShardName(0)), line)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("checkConfig = %v; want it to name %s", err, want)
	}
}

// FuzzSplitShard: whatever a shard file holds, splitShard either refuses
// it or returns units that are exactly its body cut at unit headers, each
// named by its own header, so that nothing of the file is lost or read
// twice.
func FuzzSplitShard(f *testing.F) {
	units, _ := Render(services(3), Options{})
	f.Add(layout{shards: 1}.pack(units)[ShardName(0)])
	f.Add([]byte(shardHeader(0, 1)))
	f.Add([]byte(shardHeader(0, 1) + "# Service a/b, written by lbd: x\n# Service a/b, written by lbd: y\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got := splitShard(b)
		unpack(Files{"x.cfg": b}) // never panics
		if got == nil {
			return
		}
		_, body, _ := bytes.Cut(b, []byte("\n"))
		n := 0
		for name, u := range got {
			n += len(u)
			if k, ok := unitName(u); !ok || k != name {
				t.Errorf("unit %q begins %q", name, u[:min(len(u), 60)])
			}
			if !bytes.Contains(body, u) {
				t.Errorf("unit %q is not part of the file", name)
			}
		}
		if n != len(body) {
			t.Errorf("units hold %d bytes of a %d-byte body", n, len(body))
		}
	})
}
