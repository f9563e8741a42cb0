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
	"syscall"

	"github.com/lbd/lbd/cli"
	"github.com/lbd/lbd/daemon"
	"github.com/lbd/lbd/discovery"
	"github.com/lbd/lbd/haproxy"
	"github.com/lbd/lbd/keepalived"
	"github.com/lbd/lbd/netfilter"
	"github.com/lbd/lbd/nft"
	"github.com/lbd/lbd/reconcile"
	"github.com/lbd/lbd/store"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	daemon.LimitMemory(os.LookupEnv, daemon.DefaultMemoryLimit)
	os.Exit(run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}

// defaults are lbd's defaults: cli's own, and those the parts own.
func defaults() cli.Config {
	c := cli.Defaults()
	c.Kubectl, c.SSHTimeout, c.KubectlTimeout = discovery.DefaultKubectl, discovery.DefaultConnectTimeout, discovery.DefaultCommandTimeout
	c.MaxDelete, c.MaxDeleteWindow = reconcile.DefaultMaxDelete, reconcile.DefaultMaxDeleteWindow
	c.HAConfig, c.HATrackFile, c.HANotify = keepalived.DefaultConfigPath, keepalived.DefaultTrackFile, keepalived.DefaultNotifyScript
	c.HAStateFile, c.HAPIDFile = keepalived.DefaultStateFile, keepalived.DefaultPIDFile
	nf := netfilter.DefaultOptions()
	c.MasqBit, c.IPTablesBin, c.NFTTable = nf.MasqueradeBit, nf.Binary, nft.DefaultOptions().Table
	hp := haproxy.DefaultOptions()
	c.HAProxyBase, c.HAProxyDir, c.HAProxyMasterSocket, c.HAProxyStatsSocket = hp.BasePath, hp.Dir, hp.MasterSocket, hp.StatsSocket
	c.HAProxyBin, c.HAProxyUser, c.CheckInterval, c.CheckFall, c.CheckRise = hp.HaproxyBin, hp.User, hp.CheckInterval, hp.Fall, hp.Rise
	return c
}

// run is lbd without the process around it: it parses args, runs one
// command and returns the exit code. lookupEnv is os.LookupEnv or a
// stand-in: it tells an unset variable from an empty one.
func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) int {
	inv, err := cli.Parse(args, lookupEnv, defaults())
	if errors.Is(err, flag.ErrHelp) {
		inv.Help(stdout, inv.Command) // help goes to stdout
		return cli.ExitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return cli.ExitFail
	}
	a := &app{cfg: inv.Config, stdout: stdout, stderr: stderr, closeLog: func() {}}
	defer func() { a.closeLog() }()
	switch inv.Command {
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
		return a.explain(ctx, inv.Args[0])
	case "cleanup":
		return a.exit(a.cleanup(ctx))
	case "version":
		fmt.Fprintln(stdout, "lbd", versionString())
	case "completion":
		if err := inv.Completion(stdout); err != nil {
			fmt.Fprintf(stderr, "lbd completion: %v\n", err)
			return cli.ExitFail
		}
	case "man":
		inv.Man(stdout, versionString())
	}
	return cli.ExitOK
}

// app carries the parsed configuration and the output streams.
type app struct {
	cfg            cli.Config
	stdout, stderr io.Writer
	log            *slog.Logger
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
		return cli.ExitOK
	}
	// Once on stderr; the log file (not stderr again) gets it too.
	if a.fileLog != nil {
		a.fileLog.Error("lbd failed", "err", err)
	}
	fmt.Fprintf(a.stderr, "lbd: %v\n", err)
	if errors.Is(err, store.ErrLocked) {
		return cli.ExitLocked
	}
	return cli.ExitFail
}

// passExit turns the outcome of one pass into an exit code: ExitHeld when
// the guard held deletions back.
func (a *app) passExit(res *reconcile.Result, err error) int {
	if err != nil {
		return a.exit(err)
	}
	if res == nil || res.Plan == nil {
		return cli.ExitOK
	}
	return cli.PassExit(len(res.Plan.Held))
}

// versionString is lbd's version (cli.Version).
func versionString() string { return cli.Version(version) }
