package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// flagChoices are the fixed values of the flags that have them, for the
// help, the shell completion and the man page.
var flagChoices = map[string][]string{
	"backend":    {"haproxy", "iptables", "nftables"},
	"ha":         {"none", "keepalived"},
	"log-format": {"text", "json"},
	"log-level":  {"debug", "info", "warn", "error"},
	"o":          {"table", "json"},
}

// flagSpelling is how a flag is written: -o for a one-letter name,
// --name otherwise (the flag package accepts both dashes on input).
func flagSpelling(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// isBoolFlag reports whether f takes no value (--force, not --force x).
func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// flagValueName is the placeholder of f's value in the help: its fixed
// values joined by |, the `word` of its usage, or "" for a boolean.
func flagValueName(f *flag.Flag) string {
	if ch, ok := flagChoices[f.Name]; ok {
		return strings.Join(ch, "|")
	}
	name, _ := flag.UnquoteUsage(f)
	return name
}

// flagUsage is f's usage with the backquotes removed.
func flagUsage(f *flag.Flag) string {
	_, usage := flag.UnquoteUsage(f)
	return usage
}

// flagDefault is f's default as the help shows it, "" when it is the
// zero value (empty, 0, false) and so not worth a mention.
func flagDefault(f *flag.Flag) string {
	switch f.DefValue {
	case "", "0", "0s", "false":
		return ""
	}
	if strings.ContainsAny(f.DefValue, " \t") {
		return fmt.Sprintf("%q", f.DefValue)
	}
	return f.DefValue
}

// commandNames are the subcommands, sorted.
func commandNames() []string {
	names := make([]string, 0, len(commandHelp))
	for n := range commandHelp {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// printFlags writes every flag of fs, sorted by name, as
// "  --name VALUE" followed by its usage and default wrapped at 80
// columns.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		head := "  " + flagSpelling(f.Name)
		if v := flagValueName(f); v != "" {
			head += " " + v
		}
		fmt.Fprintln(w, head)
		text := flagUsage(f)
		if d := flagDefault(f); d != "" {
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
