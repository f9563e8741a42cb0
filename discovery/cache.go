package discovery

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Limits of the object cache that [Cached] keeps from the watch.
const (
	// maxWatchEvent caps one watch event as kubectl prints it: a LIST's
	// cap, since kubectl prints an initial listing of over 500 objects as
	// one event holding them all.
	maxWatchEvent = maxStdout
	// maxCacheBytes caps the objects the cache holds, compacted: the cap of
	// one LIST's output, which holds the same objects indented.
	maxCacheBytes = maxStdout
	// maxJournalBytes caps the events remembered while a LIST runs; past
	// it the LIST's result does not make the cache trusted.
	maxJournalBytes = 64 << 20
)

// objKey names one cached object.
type objKey struct{ kind, namespace, name string }

func (k objKey) compare(o objKey) int {
	return cmp.Or(strings.Compare(kindOrder(k.kind), kindOrder(o.kind)),
		strings.Compare(k.namespace, o.namespace), strings.Compare(k.name, o.name))
}

// kindOrder puts Services first, as kubectl lists them.
func kindOrder(kind string) string {
	if kind == "Service" {
		return ""
	}
	return kind
}

// Watch event types as kubectl's --output-watch-events prints them.
const (
	evAdded    = "ADDED"
	evModified = "MODIFIED"
	evDeleted  = "DELETED"
	evBookmark = "BOOKMARK"
	evError    = "ERROR"
)

// cacheEvent is one decoded watch event: raw is the compacted object
// (nil for a deletion).
type cacheEvent struct {
	key     objKey
	deleted bool
	raw     []byte
}

// header is what the cache reads of an object: its identity.
type header struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

// decodeEvent decodes one watch event of the resource type whose objects
// are of kind into the changes it makes. A BOOKMARK makes none; an ERROR
// event (the API server ending the watch, "too old resource version") is
// an error. Every object must be of kind and name itself. kubectl prints
// an initial listing that came in pages (over 500 objects) as one ADDED
// event whose object is the list: each item is then one change.
func decodeEvent(data []byte, kind string) ([]cacheEvent, error) {
	var e struct {
		Type   string          `json:"type"`
		Object json.RawMessage `json:"object"`
	}
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("watch event: %w", err)
	}
	switch e.Type {
	case evAdded, evModified, evDeleted:
	case evBookmark:
		return nil, nil
	case evError:
		return nil, fmt.Errorf("watch event of type ERROR: %s", Printable(string(truncate(e.Object, 300))))
	default:
		return nil, fmt.Errorf("watch event of type %q", Printable(string(truncate([]byte(e.Type), 40))))
	}
	var list struct {
		Kind  string             `json:"kind"`
		Items *[]json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(e.Object, &list); err != nil {
		return nil, fmt.Errorf("watch event %s: %w", e.Type, err)
	}
	objs := []json.RawMessage{e.Object}
	if list.Items != nil && (list.Kind == "" || strings.HasSuffix(list.Kind, "List")) && e.Type == evAdded {
		objs = *list.Items
	}
	evs := make([]cacheEvent, 0, len(objs))
	for _, obj := range objs {
		key, raw, err := identify(withKind(obj, kind))
		if err != nil {
			return nil, fmt.Errorf("watch event %s: %w", e.Type, err)
		}
		if key.kind != kind {
			return nil, fmt.Errorf("watch event %s: object of kind %q, want %s", e.Type, Printable(string(truncate([]byte(key.kind), 40))), kind)
		}
		if e.Type == evDeleted {
			raw = nil
		}
		evs = append(evs, cacheEvent{key: key, deleted: e.Type == evDeleted, raw: raw})
	}
	return evs, nil
}

// withKind returns obj with "kind" set to kind when it has none: kubectl
// prints the objects of its initial listing without their kind once the
// listing comes in pages (more than 500 objects).
func withKind(obj []byte, kind string) []byte {
	var h struct {
		Kind *string `json:"kind"`
	}
	rest := bytes.TrimLeft(obj, " \t\r\n")
	if json.Unmarshal(obj, &h) != nil || h.Kind != nil || len(rest) < 2 || rest[0] != '{' {
		return obj
	}
	out := make([]byte, 0, len(rest)+len(kind)+12)
	out = append(out, `{"kind":"`+kind+`"`...)
	if body := bytes.TrimLeft(rest[1:], " \t\r\n"); body[0] != '}' {
		out = append(out, ',')
	}
	return append(out, rest[1:]...)
}

// identify returns obj's key and obj compacted. An object without a kind
// or a name is an error.
func identify(obj []byte) (objKey, []byte, error) {
	var h header
	if err := json.Unmarshal(obj, &h); err != nil {
		return objKey{}, nil, fmt.Errorf("object: %w", err)
	}
	if h.Kind == "" || h.Metadata.Name == "" {
		return objKey{}, nil, errors.New("object without kind or metadata.name")
	}
	var c bytes.Buffer
	c.Grow(len(obj))
	if err := json.Compact(&c, obj); err != nil {
		return objKey{}, nil, fmt.Errorf("object: %w", err)
	}
	return objKey{h.Kind, h.Metadata.Namespace, h.Metadata.Name}, c.Bytes(), nil
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// objectCache holds the raw objects of the cluster as LISTs and watch
// events report them, keyed by kind, namespace and name. It is trusted
// (snapshot answers) only while it provably equals the cluster's state as
// of the events applied so far: after a LIST that began while every watch
// session was live (had delivered its first event, so kubectl's own
// listing was done before the LIST started and every later change is an
// event), with no session ended since, and no limit hit. It is safe for
// concurrent use.
//
// Events that arrive while a LIST runs are applied and journaled; when the
// LIST replaces the objects the journal is applied again on top, so no
// change is lost to the race. Events of one watch come in order, so an
// event older than the LIST is followed by every later change of its
// object, and the cache converges.
type objectCache struct {
	mu    sync.Mutex
	objs  map[objKey][]byte
	bytes int
	// live holds the resource types whose current watch session has
	// delivered an event.
	live map[string]bool
	// epoch counts ended watch sessions.
	epoch   uint64
	trusted bool
	// listing is set while a LIST runs; journal holds the events seen
	// meanwhile, journalBytes their size.
	listing      bool
	journal      []cacheEvent
	journalBytes int
	journalOver  bool
	// max caps bytes: maxCacheBytes; tests lower it.
	max int
	// overflows counts the times the cache grew past max and was emptied.
	overflows int
}

func newObjectCache() *objectCache {
	return &objectCache{objs: map[objKey][]byte{}, live: map[string]bool{}, max: maxCacheBytes}
}

// apply records ev, delivered by the watch of resource res, and marks
// that session live.
func (c *objectCache) apply(res string, ev cacheEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.live[res] = true
	if c.listing && !c.journalOver {
		c.journalBytes += len(ev.raw) + 64
		if c.journalBytes > maxJournalBytes {
			c.journalOver = true
			c.journal = nil
		} else {
			c.journal = append(c.journal, ev)
		}
	}
	c.applyLocked(ev)
}

func (c *objectCache) applyLocked(ev cacheEvent) {
	if old, ok := c.objs[ev.key]; ok {
		c.bytes -= len(old)
		delete(c.objs, ev.key)
	}
	if ev.deleted {
		return
	}
	c.objs[ev.key] = ev.raw
	c.bytes += len(ev.raw)
	if c.bytes > c.max {
		// Past the cap of a LIST: drop everything and distrust the
		// cache; the next Discover lists (and fails on the same cap).
		c.objs = map[objKey][]byte{}
		c.bytes = 0
		c.trusted = false
		c.overflows++
	}
}

// ended notes that the watch session of res ended: changes from now on
// may be missed, so the cache is no longer trusted.
func (c *objectCache) ended(res string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.live[res] = false
	c.epoch++
	c.trusted = false
}

// listToken is what beginList saw, for endList to decide on trust.
type listToken struct {
	epoch   uint64
	allLive bool
}

// beginList notes that a LIST starts, for a cluster whose watches are of
// the resource types res.
func (c *objectCache) beginList(res []string) listToken {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.listing, c.journal, c.journalBytes, c.journalOver = true, nil, 0, false
	t := listToken{epoch: c.epoch, allLive: len(res) > 0}
	for _, r := range res {
		t.allLive = t.allLive && c.live[r]
	}
	return t
}

// abortList notes that the LIST begun with beginList failed.
func (c *objectCache) abortList() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.listing, c.journal, c.journalBytes, c.journalOver = false, nil, 0, false
}

// endList replaces the objects with the items of lists (kubectl's List
// JSON or the API server's typed lists), applies the events journaled since beginList again, and trusts
// the result when t allows it. It returns whether the cache is trusted.
// An item without kind or name, or a list too big, leaves the cache
// untrusted and empty.
func (c *objectCache) endList(lists [][]byte, t listToken) (bool, error) {
	objs, size, err := listObjects(lists, c.max)
	c.mu.Lock()
	defer c.mu.Unlock()
	journal, over := c.journal, c.journalOver
	c.listing, c.journal, c.journalBytes, c.journalOver = false, nil, 0, false
	if err != nil {
		c.objs, c.bytes, c.trusted = map[objKey][]byte{}, 0, false
		return false, err
	}
	c.objs, c.bytes = objs, size
	for _, ev := range journal {
		c.applyLocked(ev)
	}
	c.trusted = t.allLive && t.epoch == c.epoch && !over && c.bytes <= c.max
	return c.trusted, nil
}

// listObjects returns the items of lists (kubectl's List JSON, or typed
// lists whose items get the list's item kind) by key, compacted, and their
// total size, which must not exceed max.
func listObjects(lists [][]byte, max int) (map[objKey][]byte, int, error) {
	objs := map[objKey][]byte{}
	size := 0
	for _, list := range lists {
		var l kubeList
		if err := json.Unmarshal(list, &l); err != nil {
			return nil, 0, fmt.Errorf("cache the list: %w", err)
		}
		kind := listKinds[l.Kind]
		for i, it := range l.Items {
			if kind != "" {
				it = withKind(it, kind)
			}
			key, raw, err := identify(it)
			if err != nil {
				return nil, 0, fmt.Errorf("cache the list: item %d: %w", i, err)
			}
			if old, ok := objs[key]; ok {
				size -= len(old)
			}
			objs[key] = raw
			size += len(raw)
			if size > max {
				return nil, 0, fmt.Errorf("cache the list: objects exceed %d bytes", max)
			}
		}
	}
	return objs, size, nil
}

// snapshot returns the cached objects as kubectl's List JSON, items in
// kubectl's order (Services, then the other kinds, each by namespace and
// name), and true; or false when the cache is not trusted.
func (c *objectCache) snapshot() ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.trusted {
		return nil, false
	}
	keys := make([]objKey, 0, len(c.objs))
	for k := range c.objs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, objKey.compare)
	var b bytes.Buffer
	b.Grow(c.bytes + len(keys) + 64)
	b.WriteString(`{"apiVersion":"v1","kind":"List","items":[`)
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(c.objs[k])
	}
	b.WriteString("]}")
	return b.Bytes(), true
}

// isTrusted reports whether snapshot would answer.
func (c *objectCache) isTrusted() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.trusted
}
