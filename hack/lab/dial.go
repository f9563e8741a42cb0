package lab

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"time"

	"github.com/vishvananda/netns"
)

// Dial connects from inside namespace ns, as net.Dialer.DialContext does.
// address must be an IP literal with a port ("192.168.121.201:80"): a name
// would be resolved outside the namespace. The socket is made on an OS
// thread that enters ns for the call and leaves it after, so the returned
// connection belongs to ns while the test process stays in the host
// namespace.
func (l *Lab) Dial(ctx context.Context, ns, network, address string) (net.Conn, error) {
	if _, err := netip.ParseAddrPort(address); err != nil {
		return nil, fmt.Errorf("dial %s %s in %s: want ip:port: %w", network, address, ns, err)
	}
	var conn net.Conn
	err := InNS(ns, func() error {
		var err error
		conn, err = (&net.Dialer{}).DialContext(ctx, network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s in %s: %w", network, address, ns, err)
	}
	return conn, nil
}

// HTTPClient returns an HTTP client whose connections are made inside
// namespace ns (see Dial: URLs must use IP addresses). Each request is
// bounded by 10 seconds.
func (l *Lab) HTTPClient(ns string) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return l.Dial(ctx, ns, network, addr)
			},
		},
	}
}

// init keeps the main goroutine on the main thread for the life of the
// process, so no other goroutine (and no InNS call) ever runs there. The
// kernel reports the main thread's namespace as the whole process's
// (/proc/<pid>/ns/net, "ip netns pids"): a main thread inside a lab
// namespace would list the test binary among that namespace's processes,
// and the cleanup that kills them would kill the test.
func init() { runtime.LockOSThread() }

// InNS runs f on a fresh goroutine locked to its OS thread while that
// thread is in namespace ns: child processes (iptables, say) and netlink
// sockets that f makes belong to ns. If the thread cannot go back to its
// own namespace it stays locked, so the runtime retires it with the
// goroutine.
func InNS(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netns %s: %w", ns, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns %s: %w", ns, err)
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("leave netns %s: %w", ns, err) // thread stays locked and dies
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
