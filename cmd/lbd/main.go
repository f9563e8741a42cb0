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
	"github.com/lbd/lbd/store"
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
	// exitLocked: another lbd holds the store's lock (--lock-wait ran out).
	exitLocked = 4
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}

// run is lbd without the process around it: it parses args, runs one
// subcommand and returns the exit code. lookupEnv is os.LookupEnv or a
// stand-in: it tells an unset variable from an empty one.
func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) int {
	var c config
	// Help goes to stdout; the flag package's own error messages are
	// dropped, and the one error line goes to stderr below.
	fs := newFlagSet(&c, io.Discard)
	usage := func(cmd string) {
		if d, ok := commandHelp[cmd]; ok {
			fmt.Fprintf(stdout, "lbd %s: %s\n\n", cmd, d)
		}
		fmt.Fprint(stdout, usageHead)
		printFlags(stdout, fs)
	}
	cmd, rest, err := parseArgs(fs, args, lookupEnv)
	if errors.Is(err, flag.ErrHelp) {
		usage(cmd)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "lbd: %v (lbd --help lists the flags)\n", err)
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
	if len(rest) > 0 && cmd != "help" && cmd != "completion" {
		fmt.Fprintf(stderr, "lbd %s: unexpected arguments %q\n", cmd, rest)
		return exitFail
	}
	if err := checkAllowDelete(cmd, c.allowDelete); err != nil {
		fmt.Fprintf(stderr, "lbd %s: %v\n", cmd, err)
		return exitFail
	}
	a := &app{cfg: c, stdout: stdout, stderr: stderr}
	defer func() {
		if a.closeLog != nil {
			a.closeLog()
		}
	}()
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
	case "completion":
		if len(rest) != 1 {
			fmt.Fprintln(stderr, "lbd completion: want one shell: bash or zsh")
			return exitFail
		}
		if err := writeCompletion(stdout, rest[0], fs); err != nil {
			fmt.Fprintf(stderr, "lbd completion: %v\n", err)
			return exitFail
		}
		return exitOK
	case "man":
		writeMan(stdout, fs)
		return exitOK
	case "help":
		if len(rest) > 0 {
			usage(rest[0])
		} else {
			usage("")
		}
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
	// fileLog writes to --log-file only (nil without one): errors that
	// are printed on stderr are recorded there without a second stderr
	// line.
	fileLog *slog.Logger
	// closeLog closes the log file; run calls it last.
	closeLog func()
}

// exit logs err, if any, and turns it into an exit code.
func (a *app) exit(err error) int {
	if err == nil {
		return exitOK
	}
	// Once on stderr; the log file (not stderr again) gets it too.
	if a.fileLog != nil {
		a.fileLog.Error("lbd failed", "err", err)
	}
	fmt.Fprintf(a.stderr, "lbd: %v\n", err)
	if errors.Is(err, store.ErrLocked) {
		return exitLocked
	}
	return exitFail
}

// commandHelp is one line per command for `lbd help CMD` and
// `lbd CMD --help`.
var commandHelp = map[string]string{
	"sync":       "one sync pass (what cron runs; also the default): lock, discover, plan, apply, store. Exit 0 ok, 3 guard held deletions, 4 locked, 1 error",
	"apply":      "one sync pass that releases the held-back deletions of the services named (ns/name ...)",
	"run":        "the daemon: watch the master over SSH and sync within --debounce of each change, resync every --resync",
	"plan":       "print what a sync would change, changing nothing. Exit 0 nothing, 2 changes pending, 3 only held deletions, 1 error",
	"status":     "the stored mapping (the notes' columns), every address with its state, each service's state per backend, the last sync",
	"check":      "preflight: privileges, iptables, forwarding, pools, HA, SSH, kubectl, the pod route of every endpoint (-o json too)",
	"explain":    "ADDRESS:PORT[/PROTO]: which service and which backend objects carry it, read live, compared with the store",
	"cleanup":    "remove everything lbd programmed in the chosen backend, and the addresses it added",
	"version":    "print the version",
	"help":       "this help, or one command's with lbd help CMD (lbd CMD --help too)",
	"completion": "print a completion script for bash or zsh: source <(lbd completion bash)",
	"man":        "print the man page lbd(1) in roff: lbd man > lbd.1; man -l lbd.1",
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
