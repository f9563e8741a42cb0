package cli

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// renderMan renders the roff page at path as plain text with man -l
// (man-db), else groff or nroff, with every troff warning turned on (w:
// groff's "all" leaves out undefined macros), and returns the text and
// the warnings. It skips loudly without any of the three.
func renderMan(t *testing.T, path string) (text, warnings string) {
	t.Helper()
	var args []string
	switch {
	case lookPath("man"):
		args = []string{"man", "--warnings=w", "-l", path}
	case lookPath("groff"):
		args = []string{"groff", "-man", "-Tutf8", "-ww", path}
	case lookPath("nroff"):
		args = []string{"nroff", "-man", "-ww", path}
	default:
		t.Skip("SKIP: neither man, groff nor nroff is installed; the man page is not rendered")
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "MANWIDTH=100", "MANPAGER=cat", "PAGER=cat", "LC_ALL=C.UTF-8")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, stderr.String())
	}
	// Drop overstrikes (bold, underline) and make dashes ASCII.
	text = regexp.MustCompile(".\b").ReplaceAllString(stdout.String(), "")
	text = strings.NewReplacer("\u2212", "-", "\u2010", "-").Replace(text)
	return text, stderr.String()
}

func lookPath(name string) bool {
	_, err := exec.LookPath(name)
	return err == nil
}

// TestManPage: lbd man renders without a warning and has every section,
// every command, every flag with its value, every LBD_ variable and
// every exit code.
func TestManPage(t *testing.T) {
	out := output(t, "man")
	path := filepath.Join(t.TempDir(), "lbd.1")
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	text, warnings := renderMan(t, path)
	if warnings != "" {
		t.Errorf("rendering warns:\n%s", warnings)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(text, "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, s := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "OPTIONS", "ENVIRONMENT", "EXIT STATUS", "FILES", "SEE ALSO"} {
		if !lines[s] {
			t.Errorf("no section %s", s)
		}
	}
	for _, name := range commandNames() {
		if !tagged(text, name) {
			t.Errorf("no command %s", name)
		}
	}
	c := testDefaults()
	newFlagSet(&c).VisitAll(func(f *flag.Flag) {
		head := spelling(f.Name)
		if v := valueName(f); v != "" {
			head += " " + v
		}
		if !tagged(text, head) {
			t.Errorf("no option line %q", head)
		}
		if !tagged(text, EnvName(f.Name)) {
			t.Errorf("no variable %s", EnvName(f.Name))
		}
	})
	for _, code := range []int{ExitOK, ExitFail, ExitPending, ExitHeld, ExitLocked} {
		if !tagged(text, strconv.Itoa(code)) {
			t.Errorf("no exit status %d", code)
		}
	}
	for _, f := range []string{"/etc/default/lbd", "/opt/LoadBalancer.sqlite.db", "/var/log/loadbalancer.log"} {
		if !tagged(text, f) {
			t.Errorf("no file %s", f)
		}
	}
	if !strings.Contains(text, "(default 30s)") {
		t.Error("the options lack their defaults")
	}
}

// tagged reports whether a line of text starts (after its indent) with
// tag, alone or followed by space: a .TP tag as man renders it.
func tagged(text, tag string) bool {
	return regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(tag) + `(\s|$)`).MatchString(text)
}

// TestManWarnsOnBadRoff: the rendering check sees groff's warnings (an
// undefined macro here), so a clean render means something.
func TestManWarnsOnBadRoff(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.1")
	if err := os.WriteFile(path, []byte(".TH BAD 1\n.SH NAME\nbad\n.XX nope\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, warnings := renderMan(t, path); warnings == "" {
		t.Error("an undefined macro renders without a warning")
	}
}

// TestRoffEscape: dashes and backslashes are escaped, and a line never
// starts with a control character.
func TestRoffEscape(t *testing.T) {
	for in, want := range map[string]string{
		"--db":        `\-\-db`,
		`a\b`:         `a\eb`,
		".hidden":     `\&.hidden`,
		"'quote":      `\&'quote`,
		"plain text.": "plain text.",
	} {
		if got := roffEscape(in); got != want {
			t.Errorf("roffEscape(%q) = %q, want %q", in, got, want)
		}
	}
}
