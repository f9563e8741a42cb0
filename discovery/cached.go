package discovery

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lbd/lbd/lb"
)

// watchEventsTail makes a watch print every event whole, as JSON: first
// an ADDED event per existing object (kubectl's own listing), then one
// event per change.
const watchEventsTail = " --all-namespaces --watch -o json --output-watch-events"

// kindOf is the kind of the objects of each watched resource type.
var kindOf = map[string]string{resServices: "Service", resSlices: "EndpointSlice", resEndpoints: "Endpoints"}

// Cached is a [Source] that lists with kubectl only when it must. Its
// Watch receives the changed objects themselves and keeps them in memory;
// its Discover builds kubectl's List from them and parses it with [Parse],
// running no remote command, while the memory provably matches the
// cluster. It lists (and replaces the memory with the list) on the first
// Discover, after [Cached.Relist], and whenever a watch session ended or
// a limit was hit since the last list. It satisfies reconcile.Source and
// is safe for concurrent use.
type Cached struct {
	src   *Source
	cache *objectCache
	// mu serializes Discover, so one LIST runs at a time.
	mu     sync.Mutex
	relist atomic.Bool
	lists  atomic.Int64
	// lastParse is the parse time of the last Discover.
	lastParse atomic.Int64
}

// NewCached returns a Cached over src. src keeps its own Discover and
// Watch; use the Cached's for the cache to see the changes.
func NewCached(src *Source) *Cached {
	return &Cached{src: src, cache: newObjectCache()}
}

// Relist makes the next Discover list with kubectl, whatever the cache
// holds: the periodic full resync, the safety net for anything the watch
// got wrong.
func (c *Cached) Relist() { c.relist.Store(true) }

// Lists returns how many times Discover listed with kubectl.
func (c *Cached) Lists() int64 { return c.lists.Load() }

// LastParse returns how long the last Discover spent parsing.
func (c *Cached) LastParse() time.Duration { return time.Duration(c.lastParse.Load()) }

// Discover returns the services as [Source.Discover] does: from the cache
// when it is trusted and no relist is due, else from a kubectl LIST, which
// then replaces the cache.
func (c *Cached) Discover(ctx context.Context) ([]lb.Service, []*lb.InvalidServiceError, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.relist.Swap(false) {
		if data, ok := c.cache.snapshot(); ok {
			return c.parse(data)
		}
	}
	tok := c.cache.beginList(c.src.watchResources())
	c.lists.Add(1)
	out, err := c.src.fetchRaw(ctx)
	if err != nil {
		c.cache.abortList()
		c.relist.Store(true) // a full list stays due
		return nil, nil, fmt.Errorf("discover services on %s: %w", c.src.master, err)
	}
	svcs, invalid, err := c.parse(out...)
	if err != nil {
		c.cache.abortList()
		c.relist.Store(true)
		return nil, nil, err
	}
	if _, err := c.cache.endList(out, tok); err != nil {
		// The services are good; only the cache stays untrusted, so the
		// next Discover lists again.
		c.src.log.Warn("kubectl's list cannot be cached; every sync lists", "master", c.src.master, "err", err)
	}
	return svcs, invalid, nil
}

func (c *Cached) parse(data ...[]byte) ([]lb.Service, []*lb.InvalidServiceError, error) {
	start := time.Now()
	svcs, invalid, err := Parse(data...)
	c.lastParse.Store(int64(time.Since(start)))
	if err != nil {
		return nil, nil, fmt.Errorf("discover services on %s: %w", c.src.master, err)
	}
	return svcs, invalid, nil
}

// watchResources returns the resource types that Watch watches now.
func (s *Source) watchResources() []string {
	if s.isLegacy() {
		return []string{resServices, resEndpoints}
	}
	return []string{resServices, resSlices}
}

// Watch is [Source.Watch] delivering whole objects: it runs
//
//	<kubectl> get services --all-namespaces --watch -o json --output-watch-events
//	<kubectl> get endpointslices.discovery.k8s.io --all-namespaces --watch -o json --output-watch-events
//
// (endpoints instead of endpointslices on a cluster without the
// EndpointSlice API) on the Source's SSH connection, applies every event
// to the cache, then calls event with the resource type. It returns as
// [Source.Watch] does. An event over 256 MiB (a LIST's cap), or one that is not a
// well-formed ADDED, MODIFIED or DELETED event of the watched kind, ends
// the watch with a *CommandError. The end of either session makes the
// cache untrusted until the next list.
func (c *Cached) Watch(ctx context.Context, keepAlive time.Duration, event func(resource string)) error {
	s := c.src
	if keepAlive <= 0 {
		keepAlive = DefaultKeepAlive
	}
	return s.watchEach(ctx, s.watchResources(), func(ctx context.Context, r string) error {
		kind := kindOf[r]
		err := s.streamEvents(ctx, s.kubectl+" get "+r+watchEventsTail, keepAlive, func(data []byte) error {
			evs, err := decodeEvent(data, kind)
			if err != nil {
				return err
			}
			for _, ev := range evs {
				c.cache.apply(r, ev)
				event(r)
			}
			return nil
		})
		c.cache.ended(r)
		return err
	})
}

// streamEvents runs cmd as stream does and calls event with each JSON
// object the command prints (see splitJSON); an error from event ends the
// stream with it.
func (r *sshRunner) streamEvents(ctx context.Context, cmd string, keepAlive time.Duration, event func([]byte) error) error {
	return r.streamWith(ctx, cmd, keepAlive, func(out io.Reader, note func(string)) error {
		return splitJSON(out, maxWatchEvent, event, note)
	})
}

// splitJSON reads a stream of JSON objects, such as kubectl's indented
// watch events, and calls obj with each, whole. Text between objects (the
// terminal merges kubectl's stderr into its output) goes to text line by
// line, at most 512 bytes of each line. An object longer than max bytes,
// or an error from obj, ends the reading with that error; the end of r
// ends it with nil. Only braces outside strings count, so the splitter
// needs no decoder; obj's decoding checks the rest.
func splitJSON(r io.Reader, max int, obj func([]byte) error, text func(string)) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var buf []byte
	for {
		b, err := br.ReadByte()
		if err != nil {
			return readEnd(err)
		}
		switch b {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
		default:
			// A line of text.
			var line strings.Builder
			line.WriteByte(b)
			for {
				b, err := br.ReadByte()
				if err != nil || b == '\n' {
					if l := strings.TrimRight(line.String(), "\r"); l != "" {
						text(l)
					}
					if err != nil {
						return readEnd(err)
					}
					break
				}
				if line.Len() < 512 {
					line.WriteByte(b)
				}
			}
			continue
		}
		buf = append(buf[:0], '{')
		depth, inStr, esc := 1, false, false
		for depth > 0 {
			b, err := br.ReadByte()
			if err != nil {
				if err == io.EOF {
					return fmt.Errorf("output ends inside a JSON object (%d bytes)", len(buf))
				}
				return err
			}
			buf = append(buf, b)
			if len(buf) > max {
				return fmt.Errorf("a watch event exceeds %d bytes", max)
			}
			switch {
			case esc:
				esc = false
			case inStr:
				switch b {
				case '\\':
					esc = true
				case '"':
					inStr = false
				}
			case b == '"':
				inStr = true
			case b == '{' || b == '[':
				depth++
			case b == '}' || b == ']':
				depth--
			}
		}
		if err := obj(buf); err != nil {
			return err
		}
		if cap(buf) > 1<<20 {
			buf = nil // do not keep a big event's buffer for the small ones
		}
	}
}

// readEnd maps the end of the output to nil.
func readEnd(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}
