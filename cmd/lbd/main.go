// Command lbd is an external load balancer for bare-metal Kubernetes. See
// the README for what it does; `lbd --help` lists its flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/lbd/lbd/reconcile"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

// Exit codes. plan also exits exitPending when changes are pending. A
// pass (and plan) exits exitHeld when the max-delete guard held deletions
// back: the rest of the pass applied.
const (
	exitOK      = 0
	exitFail    = 1
	exitPending = 2
	exitHeld    = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run is lbd without the process around it: it parses args, runs one
// subcommand and returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	var c config
	fs := newFlagSet(&c, stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageHead)
		fs.PrintDefaults()
	}
	cmd, rest, err := parseArgs(fs, args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "lbd: %v\n", err)
		return exitFail
	}
	c.given = givenFlags(fs)
	if cmd == "apply" {
		c.allowDelete = append(c.allowDelete, rest...)
		rest = nil
	}
	var targets []string
	if cmd == "explain" {
		targets, rest = rest, nil
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "lbd %s: unexpected arguments %q\n", cmd, rest)
		return exitFail
	}
	if err := checkAllowDelete(cmd, c.allowDelete); err != nil {
		fmt.Fprintf(stderr, "lbd %s: %v\n", cmd, err)
		return exitFail
	}
	a := &app{cfg: c, stdout: stdout, stderr: stderr}
	switch cmd {
	case "", "sync", "apply":
		return a.passExit(a.sync(ctx))
	case "run":
		return a.exit(a.runDaemon(ctx))
	case "plan":
		return a.plan(ctx)
	case "status":
		return a.exit(a.status(ctx))
	case "check":
		return a.check(ctx)
	case "explain":
		return a.explain(ctx, targets)
	case "cleanup":
		return a.exit(a.cleanup(ctx))
	case "version":
		fmt.Fprintln(stdout, "lbd", versionString())
		return exitOK
	case "help":
		fs.Usage()
		return exitOK
	}
	fmt.Fprintf(stderr, "lbd: unknown command %q (try lbd --help)\n", cmd)
	return exitFail
}

// app carries the parsed configuration and the output streams.
type app struct {
	cfg    config
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
}

// exit logs err, if any, and turns it into an exit code.
func (a *app) exit(err error) int {
	if err == nil {
		return exitOK
	}
	if a.log != nil {
		a.log.Error("lbd failed", "err", err)
	}
	fmt.Fprintf(a.stderr, "lbd: %v\n", err)
	return exitFail
}

// passExit turns the outcome of one pass into an exit code: exitHeld when
// the guard held deletions back.
func (a *app) passExit(res *reconcile.Result, err error) int {
	if err != nil {
		return a.exit(err)
	}
	if res != nil && res.Plan != nil && len(res.Plan.Held) > 0 {
		return exitHeld
	}
	return exitOK
}

// checkAllowDelete accepts --allow-delete only where it means something
// (apply and plan), and only as namespace/name.
func checkAllowDelete(cmd string, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	if cmd != "apply" && cmd != "plan" {
		return fmt.Errorf("--allow-delete needs lbd apply (one pass) or lbd plan")
	}
	for _, k := range keys {
		ns, name, ok := strings.Cut(k, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return fmt.Errorf("--allow-delete %q: want namespace/name", k)
		}
	}
	return nil
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
