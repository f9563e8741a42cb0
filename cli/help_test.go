package cli

import (
	"errors"
	"flag"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// output is what lbd prints on stdout for args: the help, the man page
// (of version "test") or a completion script. It fails t on anything
// else.
func output(t *testing.T, args ...string) string {
	t.Helper()
	inv, err := parse(args, nil)
	var b strings.Builder
	switch {
	case errors.Is(err, flag.ErrHelp):
		inv.Help(&b, inv.Command)
	case err != nil:
		t.Fatalf("lbd %q: %v", args, err)
	case inv.Command == "man":
		inv.Man(&b, "test")
	case inv.Command == "completion":
		if err := inv.Completion(&b); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("lbd %q: command %q prints no text of cli's", args, inv.Command)
	}
	return b.String()
}

// TestHelp: the help of lbd and of each command.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"help", "plan"}, {"plan", "--help"}} {
		out := output(t, args...)
		if !strings.HasPrefix(out, "lbd: external") && !strings.HasPrefix(out, "lbd plan: print what a sync would change") {
			t.Errorf("lbd %v starts:\n%s", args, out[:80])
		}
		if !strings.Contains(out, "Usage:") || !strings.Contains(out, "  --log-level debug|info|warn|error\n") {
			t.Errorf("lbd %v lacks the usage:\n%s", args, out)
		}
	}
}

// TestHelpDocumentsEveryFlag: --help names every flag with its default,
// and the environment.
func TestHelpDocumentsEveryFlag(t *testing.T) {
	help := output(t, "--help")
	c := testDefaults()
	newFlagSet(&c).VisitAll(func(f *flag.Flag) {
		if !strings.Contains(help, "-"+f.Name) || (f.DefValue != "" && f.DefValue != "false" && !strings.Contains(help, f.DefValue)) {
			t.Errorf("--help does not document -%s with default %q", f.Name, f.DefValue)
		}
	})
	if !strings.Contains(help, "LBD_<NAME>") {
		t.Error("--help does not mention the environment variables")
	}
}

// TestHelpSpellsFlagsWithTwoDashes: --help lists every flag as
// "  --name VALUE" (a one-letter one as -o), with its default, after the
// commands.
func TestHelpSpellsFlagsWithTwoDashes(t *testing.T) {
	out := output(t, "--help")
	lines := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "  -") {
			lines[strings.Fields(l)[0]] = true
		}
	}
	c := testDefaults()
	newFlagSet(&c).VisitAll(func(f *flag.Flag) {
		want := "--" + f.Name
		if len(f.Name) == 1 {
			want = "-" + f.Name
		}
		if !lines[want] {
			t.Errorf("--help has no line %q", "  "+want)
		}
		if len(f.Name) > 1 && lines["-"+f.Name] {
			t.Errorf("--help still spells -%s with one dash", f.Name)
		}
	})
	for _, want := range []string{"  --backend haproxy|iptables|nftables\n", "  --master user@host[:port]\n", "(default /opt/LoadBalancer.sqlite.db)", "  --force\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	if i, j := strings.Index(out, "lbd plan"), strings.Index(out, "Flags:"); i < 0 || i > j {
		t.Error("the commands do not come before the flags")
	}
}

// TestFlagChoicesAreFlags: every flag with fixed values exists, and its
// usage names each value.
func TestFlagChoicesAreFlags(t *testing.T) {
	c := testDefaults()
	fs := newFlagSet(&c)
	for name, values := range choices {
		f := fs.Lookup(name)
		if f == nil {
			t.Errorf("choices names %q, which is no flag", name)
			continue
		}
		for _, v := range values {
			if !strings.Contains(f.Usage, v) {
				t.Errorf("--%s: the usage %q does not name %q", name, f.Usage, v)
			}
		}
	}
}

func TestWrap(t *testing.T) {
	got := wrap("aa bb cc dddddddddd e", 5)
	if d := cmp.Diff([]string{"aa bb", "cc", "dddddddddd", "e"}, got); d != "" {
		t.Error(d)
	}
}
