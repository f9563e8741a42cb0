package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// completionScript writes lbd completion shell to a file and returns its
// path.
func completionScript(t *testing.T, shell string) string {
	t.Helper()
	out, errs, code := runLBD(t, "completion", shell)
	if code != exitOK || errs != "" {
		t.Fatalf("lbd completion %s: exit %d, %s", shell, code, errs)
	}
	path := filepath.Join(t.TempDir(), "lbd."+shell)
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// TestBashCompletion loads the script in a real bash, checks that it
// registers _lbd for lbd, and drives it as bash does on TAB (COMP_WORDS,
// COMP_CWORD): commands first, flags after a dash, fixed values after
// their flag (also as --flag=), the command after flags and their values.
func TestBashCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("SKIP: no bash on this machine")
	}
	script := completionScript(t, "bash")
	out, err := exec.Command(bash, "--norc", "--noprofile", "-c", "source "+shellQuote(script)+" && complete -p lbd").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "complete -o default -F _lbd lbd" {
		t.Fatalf("the script does not load in bash: %v\n%s", err, out)
	}
	tests := []struct {
		words []string // the last one is the word under the cursor
		want  string
	}{
		{[]string{"lbd", "pl"}, "plan"},
		{[]string{"lbd", "c"}, "check cleanup completion"},
		{[]string{"lbd", "--backend", ""}, "haproxy iptables nftables"},
		{[]string{"lbd", "--backend", "=", ""}, "haproxy iptables nftables"},
		{[]string{"lbd", "--backend", "=", "nf"}, "nftables"},
		{[]string{"lbd", "-backend", "i"}, "iptables"},
		{[]string{"lbd", "status", "-o", ""}, "table json"},
		{[]string{"lbd", "--log-level", "w"}, "warn"},
		{[]string{"lbd", "--log-format", ""}, "text json"},
		{[]string{"lbd", "--ha", ""}, "none keepalived"},
		{[]string{"lbd", "--ha-pri"}, "--ha-priority"},
		{[]string{"lbd", "--db", "/tmp/x.db", "--force", "st"}, "status"},
		{[]string{"lbd", "--db", "=", "status", "pl"}, "plan"}, // "status" is --db's value here
		{[]string{"lbd", "--master", "root@m", ""}, "apply check cleanup completion explain help man plan run status sync version"},
		{[]string{"lbd", "plan", "st"}, ""},
		{[]string{"lbd", "help", "ex"}, "explain"},
		{[]string{"lbd", "completion", ""}, "bash zsh"},
		{[]string{"lbd", "--db", ""}, ""}, // file names, from complete -o default
	}
	for _, tt := range tests {
		var words []string
		for _, w := range tt.words {
			words = append(words, shellQuote(w))
		}
		prog := "source " + shellQuote(script) + " && COMP_WORDS=(" + strings.Join(words, " ") + ") && COMP_CWORD=" +
			strconv.Itoa(len(tt.words)-1) + ` && _lbd && echo "${COMPREPLY[*]}"`
		out, err := exec.Command(bash, "--norc", "--noprofile", "-c", prog).CombinedOutput()
		if got := strings.TrimSpace(string(out)); err != nil || got != tt.want {
			t.Errorf("%q<TAB>: %v, got %q, want %q", tt.words, err, got, tt.want)
		}
	}
}

// TestZshCompletion: the zsh script runs the bash function through
// bashcompinit; with zsh on the machine it loads there too.
func TestZshCompletion(t *testing.T) {
	script := completionScript(t, "zsh")
	b, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	if s := string(b); !strings.Contains(s, "bashcompinit") || !strings.Contains(s, "complete -o default -F _lbd lbd") {
		t.Fatalf("the zsh script lacks bashcompinit or the completion:\n%s", s)
	}
	zsh, err := exec.LookPath("zsh")
	if err != nil {
		t.Skip("SKIP: no zsh on this machine; only the script's text is checked")
	}
	out, err := exec.Command(zsh, "-f", "-c", "source "+shellQuote(script)+" && whence -w _lbd").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "function") {
		t.Errorf("the script does not load in zsh: %v\n%s", err, out)
	}
}

// TestCompletionUnknownShell: a shell lbd has no script for is an error.
func TestCompletionUnknownShell(t *testing.T) {
	if _, errs, code := runLBD(t, "completion", "fish"); code != exitFail || !strings.Contains(errs, "fish") {
		t.Errorf("lbd completion fish: exit %d, %q", code, errs)
	}
	if _, _, code := runLBD(t, "completion"); code != exitFail {
		t.Errorf("lbd completion without a shell: exit %d", code)
	}
}
