package cli

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

const usageHead = `lbd: external load balancer for bare-metal Kubernetes.

Usage:
  lbd [flags]            one sync pass (for cron): discover, plan, apply, store;
                         exit 0 done, 3 done but the guard held deletions back, 1 error
  lbd apply [flags] [--allow-delete] namespace/name...
                         one sync pass that lets the named services' deletions through
  lbd run [flags]        daemon: watch the master over SSH and sync on every change
  lbd plan [flags]       print what a sync would change; exit 0 no changes, 2 pending,
                         3 nothing pending but deletions the guard holds back, 1 error
  lbd status [flags]     the stored service mapping (-o table|json)
  lbd check [flags]      preflight: pod routes, forwarding, iptables, privileges, SSH
  lbd cleanup [flags]    remove everything lbd programmed in the chosen backend
  lbd explain [flags] ADDRESS:PORT[/PROTO]  its service and backend objects, read live; exit 2 if they differ from the store
  lbd version
  lbd completion bash|zsh  a shell completion script: source <(lbd completion bash)
  lbd man                a roff man page: lbd man > lbd.1; man -l lbd.1
  lbd help [CMD]         this help, or one command's (lbd CMD --help too)

Every flag can also be set as LBD_<NAME> in the environment,
e.g. LBD_MASTER=root@10.245.1.10 or LBD_MAX_DELETE=25%;
an empty value sets the flag empty (LBD_LOG_FILE= turns the log file off).

Flags:
`

// Help writes the help of command cmd ("" for lbd's own): the command's
// line when cmd is one, the usage, and every flag with its default.
func (inv *Invocation) Help(w io.Writer, cmd string) {
	if d, ok := commands[cmd]; ok {
		fmt.Fprintf(w, "lbd %s: %s\n\n", cmd, d)
	}
	fmt.Fprint(w, usageHead)
	printFlags(w, inv.fs)
}

// printFlags writes every flag of fs, sorted by name, as
// "  --name VALUE" followed by its usage and default wrapped at 80
// columns.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		head := "  " + spelling(f.Name)
		if v := valueName(f); v != "" {
			head += " " + v
		}
		fmt.Fprintln(w, head)
		text := usageOf(f)
		if d := defaultText(f); d != "" {
			text += " (default " + d + ")"
		}
		for _, line := range wrap(text, 80-8) {
			fmt.Fprintln(w, "        "+line)
		}
	})
}

// wrap breaks s into lines of at most width bytes at spaces; a word
// longer than width gets a line of its own.
func wrap(s string, width int) []string {
	var lines []string
	var line strings.Builder
	for _, word := range strings.Fields(s) {
		if line.Len() > 0 && line.Len()+1+len(word) > width {
			lines = append(lines, line.String())
			line.Reset()
		}
		if line.Len() > 0 {
			line.WriteByte(' ')
		}
		line.WriteString(word)
	}
	if line.Len() > 0 {
		lines = append(lines, line.String())
	}
	return lines
}
