package cli

import (
	"errors"
	"flag"
	"fmt"
	"runtime/debug"
	"slices"
	"strings"
)

// Exit codes of lbd. plan also exits ExitPending when changes are
// pending, explain when the data plane differs from the store. A pass
// (and plan) exits ExitHeld when the max-delete guard held deletions
// back: the rest of the pass applied.
const (
	ExitOK      = 0
	ExitFail    = 1
	ExitPending = 2
	ExitHeld    = 3
	// ExitLocked: another lbd holds the store's lock (--lock-wait ran out).
	ExitLocked = 4
)

// commands is one line per command for `lbd help CMD`, `lbd CMD --help`,
// the man page and the completion.
var commands = map[string]string{
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

// commandNames are the commands, sorted.
func commandNames() []string {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Invocation is one parsed and checked command line.
type Invocation struct {
	// Command is the command: "" for a sync pass, "sync", "apply", "run",
	// "plan", "status", "check", "explain", "cleanup", "version",
	// "completion" or "man". With flag.ErrHelp it is the command whose
	// help was asked for ("" for lbd's own).
	Command string
	// Args are the command's arguments: explain's one target,
	// completion's one shell (bash or zsh). apply's names are in
	// Config.AllowDelete.
	Args []string
	// Config is every setting, the defaults overlaid with the environment
	// and the command line.
	Config Config

	fs *flag.FlagSet
}

// Parse reads the environment through lookupEnv (os.LookupEnv or a
// stand-in that tells an unset variable from an empty one), then args,
// over def, and checks what can be checked without I/O: the values of the
// flags, the command and its arguments, --allow-delete, and lbd run's
// periods.
//
// Help (--help, -h, lbd help [CMD]) returns the Invocation and an error
// that is flag.ErrHelp; Invocation.Help writes it. Any other error is
// the one line lbd prints on stderr before exiting ExitFail, and the
// Invocation is nil.
func Parse(args []string, lookupEnv func(string) (string, bool), def Config) (*Invocation, error) {
	inv := &Invocation{Config: def}
	c := &inv.Config
	inv.fs = newFlagSet(c)
	cmd, rest, err := parseArgs(inv.fs, args, lookupEnv)
	inv.Command = cmd
	if errors.Is(err, flag.ErrHelp) {
		return inv, err
	}
	if err != nil {
		return nil, fmt.Errorf("lbd: %w (lbd --help lists the flags)", err)
	}
	c.Given = map[string]bool{}
	inv.fs.Visit(func(f *flag.Flag) { c.Given[f.Name] = true })
	switch cmd {
	case "apply":
		c.AllowDelete, rest = append(c.AllowDelete, rest...), nil
	case "explain", "help", "completion":
		inv.Args, rest = rest, nil
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("lbd %s: unexpected arguments %q", cmd, rest)
	}
	if err := checkAllowDelete(cmd, c.AllowDelete); err != nil {
		return nil, fmt.Errorf("lbd %s: %w", cmd, err)
	}
	switch cmd {
	case "help":
		inv.Command = ""
		if len(inv.Args) > 0 {
			inv.Command = inv.Args[0]
		}
		inv.Args = nil
		return inv, flag.ErrHelp
	case "explain":
		if len(inv.Args) != 1 {
			return nil, errors.New("lbd explain: want one ADDRESS:PORT[/PROTO], e.g. 192.168.121.240:80/TCP")
		}
	case "completion":
		if len(inv.Args) != 1 {
			return nil, errors.New("lbd completion: want one shell: bash or zsh")
		}
		if sh := inv.Args[0]; sh != "bash" && sh != "zsh" {
			return nil, fmt.Errorf("lbd completion: unknown shell %q: want bash or zsh", sh)
		}
	case "run":
		switch {
		case c.Interval <= 0:
			return nil, fmt.Errorf("lbd: --interval %v: must be positive", c.Interval)
		case c.Resync <= 0:
			return nil, fmt.Errorf("lbd: --resync %v: must be positive", c.Resync)
		case c.Debounce < 0:
			return nil, fmt.Errorf("lbd: --debounce %v: must not be negative", c.Debounce)
		}
	}
	if _, ok := commands[cmd]; !ok && cmd != "" {
		return nil, fmt.Errorf("lbd: unknown command %q (try lbd --help)", cmd)
	}
	return inv, nil
}

// parseArgs fills fs's flags from the environment, then from args, and
// returns the command ("" for a sync pass) and its remaining arguments.
// Flags may stand before or after the command.
//
// A variable set to the empty string sets its flag to empty
// (LBD_LOG_FILE= turns the log file off); only an unset one is ignored.
// An empty value for a flag whose default is already empty changes
// nothing; for a number, a duration or a boolean it is an error.
func parseArgs(fs *flag.FlagSet, args []string, lookupEnv func(string) (string, bool)) (cmd string, rest []string, err error) {
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := lookupEnv(EnvName(f.Name))
		if !ok || envErr != nil || (v == "" && f.DefValue == "") {
			return
		}
		if err := fs.Set(f.Name, v); err != nil {
			envErr = fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, err)
		}
	})
	if envErr != nil {
		return "", nil, envErr
	}
	for {
		if err := fs.Parse(args); err != nil {
			return cmd, nil, err // the command, for its help
		}
		args = fs.Args()
		if len(args) == 0 {
			return cmd, rest, nil
		}
		if cmd == "" {
			cmd = args[0]
		} else {
			rest = append(rest, args[0])
		}
		args = args[1:]
	}
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

// PassExit is the exit code of a sync pass that succeeded: ExitHeld when
// the guard held deletions back, else ExitOK.
func PassExit(held int) int {
	if held > 0 {
		return ExitHeld
	}
	return ExitOK
}

// PlanExit is the exit code of lbd plan: ExitPending with changes
// pending, else ExitHeld with deletions held back, else ExitOK.
func PlanExit(changes, held int) int {
	if changes > 0 {
		return ExitPending
	}
	return PassExit(held)
}

// Version is lbd's version: build (set with -ldflags "-X main.version=")
// when set, else the module version Go stamped into the binary, else
// "dev".
func Version(build string) string {
	if build != "" {
		return build
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
