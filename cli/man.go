package cli

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// Man writes the man page lbd(1) in roff (man macros) for lbd version,
// generated from the commands and the flags: every command, every flag
// with its value and default, every LBD_ variable, every exit code.
func (inv *Invocation) Man(w io.Writer, version string) {
	fs := inv.fs
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p(`.TH LBD 1 "" "lbd %s" "lbd manual"`, roffEscape(version))
	p(".SH NAME")
	p(`lbd \- external load balancer for bare\-metal Kubernetes`)
	p(".SH SYNOPSIS")
	p(`\fBlbd\fR [\fIflags\fR] [\fIcommand\fR] [\fIarguments\fR]`)
	p(".SH DESCRIPTION")
	p("%s", roffEscape("lbd discovers every Service and its endpoints from the Kubernetes master over SSH "+
		"(kubectl there), stores the mapping in SQLite, allocates LoadBalancer addresses from --pool "+
		"and programs a backend on this machine (haproxy, nftables or iptables) that forwards them to the endpoints. "+
		"Without a command it makes one sync pass, for cron; lbd run is the daemon."))
	p(".PP")
	p("%s", roffEscape("Flags may stand before or after the command, with one dash or two."))
	p(".SH COMMANDS")
	for _, name := range commandNames() {
		p(".TP")
		p(`\fB%s\fR`, roffEscape(name))
		p("%s", roffEscape(commands[name]))
	}
	p(".SH OPTIONS")
	fs.VisitAll(func(f *flag.Flag) {
		p(".TP")
		head := `\fB` + roffEscape(spelling(f.Name)) + `\fR`
		if v := valueName(f); v != "" {
			head += ` \fI` + roffEscape(v) + `\fR`
		}
		p("%s", head)
		text := usageOf(f)
		if d := defaultText(f); d != "" {
			text += " (default " + d + ")"
		}
		p("%s", roffEscape(text))
	})
	p(".SH ENVIRONMENT")
	p("%s", roffEscape("Every flag can be set in the environment as LBD_<NAME>, dashes as underscores; "+
		"the command line wins. An empty value sets the flag empty (LBD_LOG_FILE= turns the log file off); "+
		"an unset one leaves its default."))
	fs.VisitAll(func(f *flag.Flag) {
		p(".TP")
		p(`\fB%s\fR`, roffEscape(EnvName(f.Name)))
		p(`sets \fB%s\fR.`, roffEscape(spelling(f.Name)))
	})
	p(".SH EXIT STATUS")
	for _, e := range []struct {
		code int
		text string
	}{
		{ExitOK, "success; plan: nothing to change"},
		{ExitFail, "an error, printed once on stderr (and kept in the log file)"},
		{ExitPending, "plan: changes are pending; explain: the data plane differs from the store"},
		{ExitHeld, "the max-delete guard held deletions back (the rest of the pass applied); plan: only held deletions are pending"},
		{ExitLocked, "another lbd holds the store's lock (--lock-wait ran out)"},
	} {
		p(".TP")
		p(`\fB%d\fR`, e.code)
		p("%s", roffEscape(e.text))
	}
	p(".SH FILES")
	for _, f := range []struct{ path, text string }{
		{"/etc/default/lbd", "the environment (LBD_<NAME>=value) of the systemd unit and the cron job"},
		{defaultOf(fs, "db"), "the store (--db): the mapping, the applied state, the sync history, the lock"},
		{defaultOf(fs, "log-file"), "the log (--log-file), written beside stderr"},
	} {
		p(".TP")
		p(`\fI%s\fR`, roffEscape(f.path))
		p("%s", roffEscape(f.text))
	}
	p(".SH SEE ALSO")
	p(`\fBhaproxy\fR(1), \fBkeepalived\fR(8), \fBnft\fR(8), \fBiptables\fR(8), \fBkubectl\fR(1), \fBssh\fR(1), \fBcron\fR(8), \fBsystemd.exec\fR(5)`)
}

// defaultOf is the default of fs's flag name.
func defaultOf(fs *flag.FlagSet, name string) string {
	if f := fs.Lookup(name); f != nil {
		return f.DefValue
	}
	return ""
}

// roffEscape makes s plain text for roff: backslashes and dashes
// escaped, and no control character at the start of the line.
func roffEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}
