// Command lbd-remote is the forced command for lbd's key in the master's
// authorized_keys. sshd runs it instead of whatever the client asked for
// and puts the client's command line in $SSH_ORIGINAL_COMMAND; lbd-remote
// runs it only if it is, word for word, one of the kubectl commands lbd
// sends (see [allow]), and then runs kubectl itself, with the kubeconfig
// given on its own command line, by exec with an argument vector: no shell
// ever sees the client's words. Anything else is refused with a message on
// stderr and exit status 126.
//
// The authorized_keys line, for lbd run with --kubectl=kubectl:
//
//	restrict,pty,command="/usr/local/bin/lbd-remote --kubeconfig=/etc/lbd-remote/kubeconfig" ssh-ed25519 AAAA... lbd@lb1
//
// restrict turns off forwarding, the agent, X11 and ~/.ssh/rc; pty turns
// the pseudo-terminal back on, which lbd's watch needs (no-pty breaks
// `lbd run`; the one-shot commands need none).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
)

// Exit statuses of a command that never reached kubectl.
const (
	// exitRefused: the client's command is not one lbd sends.
	exitRefused = 126
	// exitConfig: lbd-remote's own command line (in authorized_keys) is
	// wrong, or kubectl cannot be started.
	exitConfig = 125
)

// DefaultKubeconfig is the kubeconfig used without --kubeconfig: the
// ServiceAccount's, made by hack/remote/kubeconfig.sh.
const DefaultKubeconfig = "/etc/lbd-remote/kubeconfig"

// safePath is kubectl's PATH (credential plugins are looked up there).
const safePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// timeoutWord stands, in [shapes], for kubectl's --request-timeout flag,
// whose value lbd derives from its --kubectl-timeout.
const timeoutWord = "\x00timeout"

// timeoutRE is the --request-timeout flag as lbd writes it: whole seconds.
var timeoutRE = regexp.MustCompile(`^--request-timeout=[1-9][0-9]{0,5}s$`)

// shapes are the commands lbd sends (discovery/source.go, watch.go,
// cached.go, status.go), after the "kubectl" prefix, one word each.
var shapes = [][]string{
	// Discover: two LISTs read at once, the second Endpoints on a
	// cluster without EndpointSlices.
	{"get", "--raw", "/api/v1/services", timeoutWord},
	{"get", "--raw", "/apis/discovery.k8s.io/v1/endpointslices", timeoutWord},
	{"get", "--raw", "/api/v1/endpoints", timeoutWord},
	// Discover of an older lbd (kubectl's own List), kept for an lbd
	// not yet upgraded.
	{"get", "services,endpointslices.discovery.k8s.io", "--all-namespaces", "-o", "json", timeoutWord},
	{"get", "services,endpoints", "--all-namespaces", "-o", "json", timeoutWord},
	// Watch: one per resource type.
	{"get", "services", "--all-namespaces", "--watch", "-o", "name"},
	{"get", "endpointslices.discovery.k8s.io", "--all-namespaces", "--watch", "-o", "name"},
	{"get", "endpoints", "--all-namespaces", "--watch", "-o", "name"},
	// Watch that delivers the changed objects (lbd run's cache).
	{"get", "services", "--all-namespaces", "--watch", "-o", "json", "--output-watch-events"},
	{"get", "endpointslices.discovery.k8s.io", "--all-namespaces", "--watch", "-o", "json", "--output-watch-events"},
	{"get", "endpoints", "--all-namespaces", "--watch", "-o", "json", "--output-watch-events"},
	// WriteStatus: server-side apply of the status subresource, objects
	// on stdin. What they may change is RBAC's to limit (services/status).
	{"apply", "--server-side", "--subresource=status", "--field-manager=lbd", "--force-conflicts", "-o", "name", "-f", "-", timeoutWord},
}

// errRefused is wrapped by every error of [allow].
var errRefused = errors.New("refused")

// allow returns kubectl's arguments for the client's command line cmd
// when cmd is "kubectl" and one of [shapes], words separated by single
// spaces, exactly as lbd writes them; otherwise an error wrapping
// errRefused that says why.
func allow(cmd string) ([]string, error) {
	if cmd == "" {
		return nil, fmt.Errorf("%w: no command: this key runs only lbd's kubectl commands, not a login shell", errRefused)
	}
	words := strings.Split(cmd, " ")
	if words[0] != "kubectl" {
		return nil, fmt.Errorf("%w: %q: not a kubectl command lbd sends (lbd must run with --kubectl=kubectl)", errRefused, printable(cmd))
	}
	args := words[1:]
	for _, s := range shapes {
		if matches(s, args) {
			return args, nil
		}
	}
	return nil, fmt.Errorf("%w: %q: not one of the kubectl commands lbd sends", errRefused, printable(cmd))
}

func matches(shape, args []string) bool {
	if len(shape) != len(args) {
		return false
	}
	for i, w := range shape {
		if w == timeoutWord {
			if !timeoutRE.MatchString(args[i]) {
				return false
			}
		} else if args[i] != w {
			return false
		}
	}
	return true
}

// printable cuts s to 200 bytes and lets %q escape the rest.
func printable(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}

// config is lbd-remote's own command line, from authorized_keys.
type config struct {
	kubectl    string // absolute path
	kubeconfig string
	cacheDir   string
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("lbd-remote", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	fs.StringVar(&c.kubectl, "kubectl", "kubectl", "kubectl `binary`: an absolute path, or a name looked up in "+safePath)
	fs.StringVar(&c.kubeconfig, "kubeconfig", DefaultKubeconfig, "the ServiceAccount's kubeconfig `file`, the only one kubectl is given")
	fs.StringVar(&c.cacheDir, "cache-dir", "", "kubectl's discovery cache `dir`; empty means kubectl's default under $HOME")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: lbd-remote [flags]\n\nForced command for lbd's key in the master's authorized_keys: runs $SSH_ORIGINAL_COMMAND\nonly if it is one of the kubectl commands lbd sends, with the kubeconfig below.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if !filepath.IsAbs(c.kubeconfig) {
		return c, fmt.Errorf("--kubeconfig %q: want an absolute path", c.kubeconfig)
	}
	if !filepath.IsAbs(c.kubectl) {
		p, err := lookPath(c.kubectl)
		if err != nil {
			return c, fmt.Errorf("--kubectl %q: %w", c.kubectl, err)
		}
		c.kubectl = p
	}
	return c, nil
}

// lookPath finds name in safePath, not in the caller's PATH as
// exec.LookPath would.
func lookPath(name string) (string, error) {
	if strings.Contains(name, "/") {
		return "", errors.New("want an absolute path or a bare name")
	}
	for _, dir := range filepath.SplitList(safePath) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("not found in %s", safePath)
}

// argv is kubectl's argument vector for the allowed args: the fixed
// kubeconfig (and cache dir) first.
func (c config) argv(args []string) []string {
	v := []string{c.kubectl, "--kubeconfig=" + c.kubeconfig}
	if c.cacheDir != "" {
		v = append(v, "--cache-dir="+c.cacheDir)
	}
	return append(v, args...)
}

// env is kubectl's environment: a fixed PATH and the caller's HOME, and
// nothing else a client could have sent (no KUBECONFIG, no KUBECTL_*).
func env(getenv func(string) string) []string {
	e := []string{"PATH=" + safePath}
	if h := getenv("HOME"); h != "" {
		e = append(e, "HOME="+h)
	}
	return e
}

// execFunc replaces the process, as syscall.Exec does.
type execFunc func(argv0 string, argv []string, envv []string) error

// run is main without the exit: it returns the exit status when it does
// not exec kubectl (exec replaces the process, so kubectl's own status,
// signals and terminal reach sshd unchanged).
func run(args []string, getenv func(string) string, stderr io.Writer, exec execFunc) int {
	c, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "lbd-remote: misconfigured in authorized_keys: %v\n", err)
		return exitConfig
	}
	kargs, err := allow(getenv("SSH_ORIGINAL_COMMAND"))
	if err != nil {
		fmt.Fprintf(stderr, "lbd-remote: %v\n", err)
		return exitRefused
	}
	v := c.argv(kargs)
	err = exec(v[0], v, env(getenv))
	fmt.Fprintf(stderr, "lbd-remote: exec %s: %v\n", v[0], err)
	return exitConfig
}

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr, syscall.Exec))
}
