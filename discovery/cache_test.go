package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// svcObj is a Service object with one TCP port and an external IP.
func svcObj(ns, name string, port int) string {
	return fmt.Sprintf(`{"apiVersion":"v1","kind":"Service","metadata":{"name":%q,"namespace":%q},
		"spec":{"type":"ClusterIP","clusterIP":"10.96.0.%d","externalIPs":["192.168.121.%d"],
		"ports":[{"port":%d,"protocol":"TCP","targetPort":8080}]}}`, name, ns, port%250+1, port%250+1, port)
}

// sliceObj is an EndpointSlice of service name with the given ready IPs.
func sliceObj(ns, name string, ips ...string) string {
	var eps []string
	for _, ip := range ips {
		eps = append(eps, fmt.Sprintf(`{"addresses":[%q],"conditions":{"ready":true}}`, ip))
	}
	return fmt.Sprintf(`{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
		"metadata":{"name":%q,"namespace":%q,"labels":{"kubernetes.io/service-name":%q}},
		"addressType":"IPv4","endpoints":[%s],"ports":[{"port":8080,"protocol":"TCP","name":""}]}`,
		name+"-abc", ns, name, strings.Join(eps, ","))
}

func listOf(items ...string) []byte {
	return []byte(`{"apiVersion":"v1","kind":"List","items":[` + strings.Join(items, ",") + `]}`)
}

func event(typ, obj string) []byte {
	// Indented, as kubectl prints it.
	var v any
	if err := json.Unmarshal([]byte(`{"type":"`+typ+`","object":`+obj+`}`), &v); err != nil {
		panic(err)
	}
	b, _ := json.MarshalIndent(v, "", "    ")
	return b
}

// mustApply decodes data as an event of kind and applies it as res's.
func mustApply(t *testing.T, c *objectCache, res string, data []byte) {
	t.Helper()
	evs, err := decodeEvent(data, kindOf[res])
	if err != nil || len(evs) != 1 {
		t.Fatalf("decodeEvent = %v, %v", evs, err)
	}
	c.apply(res, evs[0])
}

// cachedNames returns the snapshot's items as kind/ns/name, or nil when the
// cache is not trusted.
func cachedNames(t *testing.T, c *objectCache) []string {
	t.Helper()
	data, ok := c.snapshot()
	if !ok {
		return nil
	}
	var l kubeList
	if err := json.Unmarshal(data, &l); err != nil || l.Kind != "List" {
		t.Fatalf("snapshot is not a List: %v\n%s", err, data)
	}
	out := []string{}
	for _, it := range l.Items {
		k, _, err := identify(it)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, k.kind+"/"+k.namespace+"/"+k.name)
	}
	return out
}

// liveCache returns a cache trusted after a LIST of items while both
// watches are live.
func liveCache(t *testing.T, items ...string) *objectCache {
	t.Helper()
	c := newObjectCache()
	c.live[resServices], c.live[resSlices] = true, true
	tok := c.beginList([]string{resServices, resSlices})
	if ok, err := c.endListOne(listOf(items...), tok); !ok || err != nil {
		t.Fatalf("endList = %v, %v; want trusted", ok, err)
	}
	return c
}

func TestObjectCache(t *testing.T) {
	t.Run("events added, modified, deleted", func(t *testing.T) {
		c := liveCache(t, svcObj("a", "web", 80))
		mustApply(t, c, resServices, event(evAdded, svcObj("a", "db", 5432)))
		mustApply(t, c, resSlices, event(evAdded, sliceObj("a", "web", "10.244.1.1")))
		mustApply(t, c, resServices, event(evModified, svcObj("a", "web", 81)))
		want := []string{"Service/a/db", "Service/a/web", "EndpointSlice/a/web-abc"}
		if diff := cmp.Diff(want, cachedNames(t, c)); diff != "" {
			t.Errorf("items (-want +got):\n%s", diff)
		}
		data, _ := c.snapshot()
		svcs, invalid, err := Parse(data)
		if err != nil || len(invalid) != 0 || len(svcs) != 2 {
			t.Fatalf("Parse = %d services, %v, %v", len(svcs), invalid, err)
		}
		if web := svcs[1]; web.Ports[0].Port != 81 || len(web.Ports[0].Endpoints) != 1 {
			t.Errorf("web after MODIFIED = %+v", web)
		}
		mustApply(t, c, resServices, event(evDeleted, svcObj("a", "db", 5432)))
		mustApply(t, c, resSlices, event(evDeleted, sliceObj("a", "web")))
		if diff := cmp.Diff([]string{"Service/a/web"}, cachedNames(t, c)); diff != "" {
			t.Errorf("items after DELETED (-want +got):\n%s", diff)
		}
		if c.bytes != len(mustCompact(t, svcObj("a", "web", 81))) {
			t.Errorf("bytes = %d, want the one object's", c.bytes)
		}
	})

	t.Run("a LIST replaces everything, and events during it survive", func(t *testing.T) {
		c := liveCache(t, svcObj("a", "old", 80), svcObj("a", "web", 80))
		tok := c.beginList([]string{resServices, resSlices})
		// While the LIST runs: web changes and new appears.
		mustApply(t, c, resServices, event(evModified, svcObj("a", "web", 90)))
		mustApply(t, c, resServices, event(evAdded, svcObj("a", "new", 70)))
		// The LIST was taken before the changes: it lacks old (deleted
		// earlier), has web's old port and no new.
		if ok, err := c.endListOne(listOf(svcObj("a", "web", 80), svcObj("b", "x", 1)), tok); !ok || err != nil {
			t.Fatalf("endList = %v, %v", ok, err)
		}
		want := []string{"Service/a/new", "Service/a/web", "Service/b/x"}
		if diff := cmp.Diff(want, cachedNames(t, c)); diff != "" {
			t.Errorf("items (-want +got):\n%s", diff)
		}
		data, _ := c.snapshot()
		svcs, _, _ := Parse(data)
		if len(svcs) != 3 || svcs[1].Name != "web" || svcs[1].Ports[0].Port != 90 {
			t.Errorf("web lost the change made during the LIST: %+v", svcs)
		}
	})

	t.Run("trust", func(t *testing.T) {
		res := []string{resServices, resSlices}
		list := listOf(svcObj("a", "web", 80))
		tests := []struct {
			name string
			do   func(c *objectCache) bool // returns what endList said
			want bool
		}{
			{name: "no watch live: a LIST alone is not trusted", do: func(c *objectCache) bool {
				ok, _ := c.endListOne(list, c.beginList(res))
				return ok
			}},
			{name: "one watch live only", do: func(c *objectCache) bool {
				c.live[resServices] = true
				ok, _ := c.endListOne(list, c.beginList(res))
				return ok
			}},
			{name: "both live", want: true, do: func(c *objectCache) bool {
				c.live[resServices], c.live[resSlices] = true, true
				ok, _ := c.endListOne(list, c.beginList(res))
				return ok
			}},
			{name: "a session ends during the LIST", do: func(c *objectCache) bool {
				c.live[resServices], c.live[resSlices] = true, true
				tok := c.beginList(res)
				c.ended(resSlices)
				c.live[resSlices] = true // the next session is up again
				ok, _ := c.endListOne(list, tok)
				return ok
			}},
			{name: "a session ends after the LIST", do: func(c *objectCache) bool {
				c.live[resServices], c.live[resSlices] = true, true
				c.endListOne(list, c.beginList(res))
				c.ended(resServices)
				return c.isTrusted()
			}},
			{name: "the journal overflows", do: func(c *objectCache) bool {
				c.live[resServices], c.live[resSlices] = true, true
				tok := c.beginList(res)
				big := cacheEvent{key: objKey{"Service", "a", "big"}, raw: make([]byte, maxJournalBytes/2)}
				c.apply(resServices, big)
				c.apply(resServices, big)
				c.apply(resServices, cacheEvent{key: big.key, deleted: true})
				ok, _ := c.endListOne(list, tok)
				return ok
			}},
			{name: "a failed LIST changes nothing", want: true, do: func(c *objectCache) bool {
				c.live[resServices], c.live[resSlices] = true, true
				c.endListOne(list, c.beginList(res))
				c.beginList(res)
				c.abortList()
				return c.isTrusted()
			}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				c := newObjectCache()
				if got := tt.do(c); got != tt.want {
					t.Errorf("trusted = %v, want %v", got, tt.want)
				}
				if _, ok := c.snapshot(); ok != c.isTrusted() {
					t.Errorf("snapshot answers %v while trusted is %v", ok, c.isTrusted())
				}
			})
		}
	})

	t.Run("the cache never holds more than a LIST may", func(t *testing.T) {
		c := liveCache(t)
		if c.max != maxCacheBytes {
			t.Errorf("cap = %d, want a LIST's, %d", c.max, maxCacheBytes)
		}
		c.max = 1 << 16 // the same code, at a size a test can fill fast
		chunk := c.max / 4
		for i := range 5 {
			c.apply(resServices, cacheEvent{key: objKey{"Service", "a", fmt.Sprint(i)}, raw: make([]byte, chunk)})
			if c.bytes > c.max {
				t.Fatalf("after %d objects the cache holds %d bytes, over %d", i+1, c.bytes, c.max)
			}
		}
		if c.overflows != 1 || c.isTrusted() {
			t.Errorf("overflows = %d, trusted = %v; want 1 and false", c.overflows, c.isTrusted())
		}
		// A LIST whose objects exceed the cap is refused too.
		tok := c.beginList([]string{resServices, resSlices})
		_, err := c.endListOne(listOf(`{"kind":"Service","metadata":{"name":"x","namespace":"a"},"pad":"`+strings.Repeat("x", c.max)+`"}`), tok)
		if err == nil || c.isTrusted() || c.bytes != 0 {
			t.Errorf("endList of an over-cap list = %v, trusted %v, %d bytes; want an error, untrusted, empty", err, c.isTrusted(), c.bytes)
		}
	})
}

func mustCompact(t *testing.T, obj string) []byte {
	t.Helper()
	_, raw, err := identify([]byte(obj))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestDecodeEvent(t *testing.T) {
	web, db := objKey{"Service", "a", "web"}, objKey{"Service", "a", "db"}
	tests := []struct {
		name    string
		data    string
		kind    string
		want    []objKey
		wantDel bool
		wantErr string
	}{
		{name: "added", data: string(event(evAdded, svcObj("a", "web", 80))), kind: "Service", want: []objKey{web}},
		{name: "deleted", data: string(event(evDeleted, svcObj("a", "web", 80))), kind: "Service", want: []objKey{web}, wantDel: true},
		{name: "a paged initial listing: one event holding the list", kind: "Service", want: []objKey{web, db},
			data: `{"type":"ADDED","object":{"apiVersion":"v1","items":[` + svcObj("a", "web", 80) + `,` + svcObj("a", "db", 81) + `],"metadata":{"resourceVersion":"9"}}}`},
		{name: "bookmark skipped", data: `{"type":"BOOKMARK","object":{"kind":"Service","metadata":{"resourceVersion":"9"}}}`, kind: "Service"},
		{name: "error event", data: `{"type":"ERROR","object":{"kind":"Status","message":"too old resource version"}}`, kind: "Service", wantErr: "too old resource version"},
		{name: "unknown type", data: `{"type":"EXPLODED","object":{}}`, kind: "Service", wantErr: `type "EXPLODED"`},
		{name: "wrong kind", data: string(event(evAdded, sliceObj("a", "web"))), kind: "Service", wantErr: `kind "EndpointSlice", want Service`},
		{name: "wrong kind in a list", kind: "Service", wantErr: `kind "EndpointSlice", want Service`,
			data: `{"type":"ADDED","object":{"items":[` + sliceObj("a", "web") + `]}}`},
		{name: "no kind: the watched one", data: `{"type":"ADDED","object":{"metadata":{"name":"web","namespace":"a"}}}`, kind: "Service", want: []objKey{web}},
		{name: "no name", data: `{"type":"ADDED","object":{"kind":"Service","metadata":{}}}`, kind: "Service", wantErr: "without kind or metadata.name"},
		{name: "not JSON", data: `{"type":`, kind: "Service", wantErr: "watch event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := decodeEvent([]byte(tt.data), tt.kind)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []objKey
			for _, ev := range evs {
				got = append(got, ev.key)
				if ev.deleted != tt.wantDel {
					t.Errorf("%v: deleted = %v", ev.key, ev.deleted)
				}
				if tt.wantDel {
					continue
				}
				if k, _, err := identify(ev.raw); err != nil || k != ev.key {
					t.Errorf("the cached object names %+v, %v; want %+v", k, err, ev.key)
				}
				if strings.ContainsAny(string(ev.raw), "\n ") {
					t.Errorf("object not compacted: %s", ev.raw)
				}
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(objKey{})); diff != "" {
				t.Errorf("keys (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSplitJSON(t *testing.T) {
	in := "Warning: a login banner\n" + string(event(evAdded, svcObj("a", "x{", 80))) + "\n" +
		`{"type":"MODIFIED","object":{"kind":"Service","metadata":{"name":"q\"}{","namespace":"a"}}}` +
		"\r\nerror: the server went away\n"
	var objs []string
	var texts []string
	err := splitJSON(strings.NewReader(in), 1<<20, func(b []byte) error {
		objs = append(objs, string(b))
		return nil
	}, func(s string) { texts = append(texts, s) })
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Fatalf("objects = %q", objs)
	}
	for _, o := range objs {
		if !json.Valid([]byte(o)) {
			t.Errorf("not one JSON object: %q", o)
		}
	}
	if diff := cmp.Diff([]string{"Warning: a login banner", "error: the server went away"}, texts); diff != "" {
		t.Errorf("text (-want +got):\n%s", diff)
	}

	t.Run("an object over the cap ends the stream", func(t *testing.T) {
		big := `{"a":"` + strings.Repeat("x", 2000) + `"}`
		err := splitJSON(strings.NewReader(big), 1000, func([]byte) error { return nil }, func(string) {})
		if err == nil || !strings.Contains(err.Error(), "exceeds 1000 bytes") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("a cut object is an error", func(t *testing.T) {
		err := splitJSON(strings.NewReader(`{"a":{`), 1000, func([]byte) error { return nil }, func(string) {})
		if err == nil {
			t.Error("err = nil")
		}
	})
	t.Run("obj's error ends the stream", func(t *testing.T) {
		stop := errors.New("stop")
		err := splitJSON(strings.NewReader(`{}{}`), 1000, func([]byte) error { return stop }, func(string) {})
		if !errors.Is(err, stop) {
			t.Errorf("err = %v", err)
		}
	})
}

// fakeCluster is a Source whose remote commands are fakes: a LIST returns
// list (counting calls) and each watch streams what its channel sends.
type fakeCluster struct {
	mu      sync.Mutex
	list    []byte
	listed  int
	watches map[string]chan []byte
}

func (f *fakeCluster) source(t *testing.T) *Source {
	f.watches = map[string]chan []byte{resServices: make(chan []byte, 100), resSlices: make(chan []byte, 100)}
	return &Source{
		kubectl: "k", master: "root@m", log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		run: func(_ context.Context, cmd string) ([]byte, error) {
			switch cmd {
			case "k" + slicesRaw:
				return []byte(`{"kind":"EndpointSliceList","items":[]}`), nil
			case "k" + servicesRaw:
			default:
				t.Errorf("unexpected command %q", cmd)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			f.listed++
			return f.list, nil
		},
		streamEvents: func(ctx context.Context, cmd string, _ time.Duration, ev func([]byte) error) error {
			res := strings.Fields(cmd)[2]
			if cmd != "k get "+res+watchEventsTail {
				t.Errorf("unexpected watch %q", cmd)
			}
			for {
				select {
				case <-ctx.Done():
					return nil
				case b := <-f.watches[res]:
					if b == nil {
						return &CommandError{ExitStatus: 1, Err: errors.New("watch failed")}
					}
					if err := ev(b); err != nil {
						return err
					}
				}
			}
		},
	}
}

func (f *fakeCluster) lists() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.listed
}

func TestCached(t *testing.T) {
	f := &fakeCluster{list: listOf(svcObj("a", "web", 80), sliceObj("a", "web", "10.244.1.1"))}
	c := NewCached(f.source(t))
	ctx := t.Context()
	var mu sync.Mutex
	seen := map[string]int{}
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- c.Watch(ctx, time.Hour, func(res string) { mu.Lock(); seen[res]++; mu.Unlock() })
	}()
	seenOf := func(res string) int { mu.Lock(); defer mu.Unlock(); return seen[res] }
	discover := func() (int, int) {
		t.Helper()
		svcs, _, err := c.Discover(ctx)
		if err != nil {
			t.Fatal(err)
		}
		eps := 0
		for _, s := range svcs {
			for _, p := range s.Ports {
				eps += len(p.Endpoints)
			}
		}
		return len(svcs), eps
	}

	// Before the watches delivered anything, every Discover lists.
	discover()
	discover()
	if f.lists() != 2 {
		t.Fatalf("lists before the watches are live = %d, want 2", f.lists())
	}
	// kubectl's own listing arrives; the next Discover lists once more,
	// now trusted.
	f.watches[resServices] <- event(evAdded, svcObj("a", "web", 80))
	f.watches[resSlices] <- event(evAdded, sliceObj("a", "web", "10.244.1.1"))
	waitFor(t, 5*time.Second, "both initial events", func() bool { return seenOf(resServices) == 1 && seenOf(resSlices) == 1 })
	discover()
	if f.lists() != 3 {
		t.Fatalf("lists = %d, want 3", f.lists())
	}
	// An endpoint change: no LIST, the change is seen.
	f.watches[resSlices] <- event(evModified, sliceObj("a", "web", "10.244.1.1", "10.244.1.2"))
	waitFor(t, 5*time.Second, "the change", func() bool { return seenOf(resSlices) == 2 })
	if n, eps := discover(); n != 1 || eps != 2 || f.lists() != 3 {
		t.Errorf("after the change: %d services, %d endpoints, %d lists; want 1, 2, 3", n, eps, f.lists())
	}
	// Relist forces one LIST, after which the cache answers again.
	c.Relist()
	discover()
	discover()
	if f.lists() != 4 {
		t.Errorf("lists after Relist = %d, want 4", f.lists())
	}
	if c.Lists() != 4 {
		t.Errorf("Lists() = %d, want 4", c.Lists())
	}
	// A watch that fails ends Watch and makes the next Discover list.
	f.watches[resServices] <- nil
	if err := <-watchDone; err == nil || !strings.Contains(err.Error(), "watch services") {
		t.Errorf("Watch = %v", err)
	}
	discover()
	if f.lists() != 5 {
		t.Errorf("lists after the watch ended = %d, want 5", f.lists())
	}
}

// TestCachedLegacyEndpoints: on a cluster without EndpointSlices, Cached
// watches Endpoints and lists services,endpoints; the cache answers with
// the Endpoints objects the watch delivered.
func TestCachedLegacyEndpoints(t *testing.T) {
	eps := func(ips ...string) string {
		var a []string
		for _, ip := range ips {
			a = append(a, fmt.Sprintf(`{"ip":%q}`, ip))
		}
		return `{"kind":"Endpoints","metadata":{"name":"web","namespace":"a"},"subsets":[{"addresses":[` +
			strings.Join(a, ",") + `],"ports":[{"port":8080,"protocol":"TCP"}]}]}`
	}
	var mu sync.Mutex
	var cmds []string
	changes := make(chan []byte, 4)
	s := &Source{
		kubectl: "k", master: "root@m", log: slog.New(slog.NewTextHandler(io.Discard, nil)), legacy: true,
		run: func(_ context.Context, cmd string) ([]byte, error) {
			mu.Lock()
			cmds = append(cmds, cmd)
			mu.Unlock()
			if cmd == "k"+servicesRaw {
				return listOf(svcObj("a", "web", 80)), nil
			}
			return listOf(eps("10.244.1.1")), nil
		},
		streamEvents: func(ctx context.Context, cmd string, _ time.Duration, ev func([]byte) error) error {
			mu.Lock()
			cmds = append(cmds, cmd)
			mu.Unlock()
			first := event(evAdded, svcObj("a", "web", 80))
			if strings.Contains(cmd, " endpoints ") {
				first = event(evAdded, eps("10.244.1.1"))
			}
			if err := ev(first); err != nil {
				return err
			}
			if !strings.Contains(cmd, " endpoints ") {
				<-ctx.Done()
				return nil
			}
			for {
				select {
				case <-ctx.Done():
					return nil
				case b := <-changes:
					if err := ev(b); err != nil {
						return err
					}
				}
			}
		},
	}
	c := NewCached(s)
	var n atomic.Int64
	go c.Watch(t.Context(), time.Hour, func(string) { n.Add(1) })
	waitFor(t, 5*time.Second, "both listings", func() bool { return n.Load() == 2 })
	if _, _, err := c.Discover(t.Context()); err != nil {
		t.Fatal(err)
	}
	changes <- event(evModified, eps("10.244.1.1", "10.244.1.2"))
	waitFor(t, 5*time.Second, "the change", func() bool { return n.Load() == 3 })
	svcs, _, err := c.Discover(t.Context())
	if err != nil || len(svcs) != 1 || len(svcs[0].Ports[0].Endpoints) != 2 {
		t.Fatalf("Discover = %+v, %v; want web with 2 endpoints", svcs, err)
	}
	mu.Lock()
	slices.Sort(cmds)
	want := []string{"k" + endpointsRaw, "k" + servicesRaw, "k get endpoints" + watchEventsTail, "k get services" + watchEventsTail}
	if diff := cmp.Diff(want, cmds); diff != "" {
		t.Errorf("commands (-want +got):\n%s", diff)
	}
	mu.Unlock()
}

// endListOne is endList of one list.
func (c *objectCache) endListOne(list []byte, t listToken) (bool, error) {
	return c.endList([][]byte{list}, t)
}
