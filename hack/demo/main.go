package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		}
		os.Exit(1)
	}
}

// config is what the flags set.
type config struct {
	// dir is the state directory: lbd's binary, database and log, the
	// haproxy files, the lab's keys and logs, and the wrapper scripts.
	dir string
	// lbd is a prebuilt lbd binary; empty builds ./cmd/lbd into dir.
	lbd string
	// installDeps runs hack/install-deps.sh first.
	installDeps bool
	// requests is how many requests each traffic check sends.
	requests int
}

const usage = `usage: go run ./hack/demo up|down [flags]   (as root)

  up     start the demo lab, show lbd carrying traffic with iptables and
         haproxy, and leave the lab running for exploring
  down   remove the demo lab: processes, namespaces lbd-demo-*, state dir

flags:
`

// run parses args (the subcommand, with flags before or after it) and
// runs the subcommand, printing its story to out.
func run(ctx context.Context, args []string, out, errOut io.Writer) error {
	c := config{}
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.Usage = func() { fmt.Fprint(errOut, usage); fs.PrintDefaults() }
	fs.StringVar(&c.dir, "dir", "/tmp/lbd-demo", "state `directory`, removed by down (and by the next up)")
	fs.StringVar(&c.lbd, "lbd", "", "prebuilt lbd `binary`; empty: go build ./cmd/lbd into the state directory")
	fs.BoolVar(&c.installDeps, "install-deps", true, "run hack/install-deps.sh first (installs only what is missing)")
	fs.IntVar(&c.requests, "requests", 10, "requests per traffic check")
	var cmd string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		if cmd != "" {
			return fmt.Errorf("unexpected argument %q\n%s", fs.Arg(0), usage)
		}
		cmd, args = fs.Arg(0), fs.Args()[1:]
	}
	if c.requests < 1 || c.requests > 10000 {
		return fmt.Errorf("-requests %d: want 1..10000", c.requests)
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, iptables, haproxy): run `sudo make demo`")
	}
	switch cmd {
	case "up":
		return up(ctx, c, out)
	case "down":
		return down(c, out)
	default:
		fs.Usage()
		return fmt.Errorf("want subcommand up or down, got %q", cmd)
	}
}
