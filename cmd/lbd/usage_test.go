package main

import (
	"bytes"
	"flag"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestHelpSpellsFlagsWithTwoDashes: --help lists every flag as
// "  --name VALUE" (a one-letter one as -o), with its default, after the
// commands.
func TestHelpSpellsFlagsWithTwoDashes(t *testing.T) {
	out, _, code := runLBD(t, "--help")
	if code != exitOK {
		t.Fatalf("--help exit %d", code)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "  -") {
			lines[strings.Fields(l)[0]] = true
		}
	}
	var c config
	newFlagSet(&c, &bytes.Buffer{}).VisitAll(func(f *flag.Flag) {
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
	var c config
	fs := newFlagSet(&c, &bytes.Buffer{})
	for name, values := range flagChoices {
		f := fs.Lookup(name)
		if f == nil {
			t.Errorf("flagChoices names %q, which is no flag", name)
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
