package cli

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
	out := output(t, "completion", shell)
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

// TestZshCompletion loads the zsh script in a real zsh after compinit,
// as a user's .zshrc does, checks that it registers _lbd for lbd through
// bashcompinit, and runs _lbd there (with bash's 0-based arrays, as
// _bash_complete calls it) for a flag's values and for the command after
// flags. It skips loudly only without zsh.
func TestZshCompletion(t *testing.T) {
	script := completionScript(t, "zsh")
	zsh, err := exec.LookPath("zsh")
	if err != nil {
		t.Skip("SKIP: no zsh on this machine (hack/install-deps.sh installs it); the zsh completion is not loaded")
	}
	prog := `autoload -U compinit && compinit -u && source ` + shellQuote(script) + ` && print -r -- "registered: ${_comps[lbd]}" &&
setopt ksharrays &&
COMP_WORDS=(lbd --backend "") && COMP_CWORD=2 && _lbd && print -r -- "backend: ${COMPREPLY[*]}" &&
COMP_WORDS=(lbd --db /tmp/x.db status -o "") && COMP_CWORD=5 && _lbd && print -r -- "output: ${COMPREPLY[*]}" &&
COMP_WORDS=(lbd completion "") && COMP_CWORD=2 && _lbd && print -r -- "shells: ${COMPREPLY[*]}"`
	cmd := exec.Command(zsh, "-f", "-c", prog)
	home := t.TempDir() // compinit writes its .zcompdump there
	cmd.Env = append(os.Environ(), "HOME="+home, "ZDOTDIR="+home)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("the script does not load in zsh: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	want := "registered: _bash_complete -o default -F _lbd\nbackend: haproxy iptables nftables\noutput: table json\nshells: bash zsh\n"
	if got := stdout.String(); got != want {
		t.Errorf("zsh:\n%s\nwant:\n%s", got, want)
	}
}
