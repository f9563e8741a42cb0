package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/lbd/lbd/hack/lab"
)

// settleHaproxy waits, briefly, until the old worker of the last reload
// has gone, so that the next connections all meet the new configuration.
func (d *demo) settleHaproxy(ctx context.Context) error {
	if err := d.waitWorkers(ctx, nil, func(n int) bool { return n == 1 }); err != nil {
		d.say("note: an old haproxy worker is still finishing its connections: %v", err)
	}
	return nil
}

// waitWorkers polls haproxy's master CLI ("show proc") until ok accepts
// the number of workers, for at most 10 seconds.
func (d *demo) waitWorkers(ctx context.Context, p *lab.Process, ok func(int) bool) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var last error
	for {
		n, err := haproxyWorkers(ctx, d.hap.master)
		if err == nil && ok(n) {
			return nil
		}
		last = err
		if err == nil {
			last = fmt.Errorf("%d workers", n)
		}
		if p != nil && p.Err() != nil {
			return fmt.Errorf("haproxy exited: %w", p.Err())
		}
		select {
		case <-ctx.Done():
			return errors.Join(last, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// haproxyWorkers asks the master CLI socket how many workers run.
func haproxyWorkers(ctx context.Context, sock string) (int, error) {
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "unix", sock)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, "show proc\n"); err != nil {
		return 0, err
	}
	// The master answers once the input ends.
	if err := c.(*net.UnixConn).CloseWrite(); err != nil {
		return 0, err
	}
	n := 0
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[1] == "worker" {
			n++
		}
	}
	return n, sc.Err()
}
