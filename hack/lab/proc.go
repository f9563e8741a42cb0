package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a long-running process of the lab, started in its own process
// group inside a namespace, with its output in logs/<name>.log and its pid
// in run/<name>.pid.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{} // closed when the process has exited
	err  error         // exit status, valid after done
}

// startProc starts argv inside ns under the given name. The process is not
// tied to any context: it lives until stop or Close.
func (l *Lab) startProc(name, ns string, argv ...string) (*proc, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("start %s: lab is closed", name)
	}
	if p, ok := l.procs[name]; ok {
		select {
		case <-p.done:
		default:
			return nil, fmt.Errorf("start %s: already running as pid %d", name, p.cmd.Process.Pid)
		}
	}
	logPath := filepath.Join(l.Dir, "logs", name+".log")
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer f.Close()
	fmt.Fprintf(f, "--- %s: ip netns exec %s %s\n", time.Now().Format(time.RFC3339Nano), ns, strings.Join(argv, " "))
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = cleanEnv()
	// Own process group, so stop can kill the daemon and its children;
	// Pdeathsig takes it down if the test binary dies without Close,
	// unless the lab is detached and meant to outlive its starter.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if l.detach {
		cmd.SysProcAttr.Pdeathsig = 0
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	pidFile := filepath.Join(l.Dir, "run", name+".pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		p.stop()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	l.procs[name] = p
	return p, nil
}

// cleanEnv is the test's environment without variables that would steer
// the lab's daemons elsewhere (a system etcd's ETCD_*, a user's KUBECONFIG).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "ETCD_") || strings.HasPrefix(kv, "KUBECONFIG=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop kills the process group and waits for the process to be reaped.
func (p *proc) stop() error {
	if p.exited() {
		return nil
	}
	pid := p.cmd.Process.Pid
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s (pgid %d): %w", p.name, pid, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("kill %s (pid %d): still running after 10s", p.name, pid)
	}
}

// tail returns the last n lines of the process's log.
func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// waitReady polls check every 100ms until it succeeds, the process exits,
// timeout passes or ctx ends; failures carry the tail of the process log.
func waitReady(ctx context.Context, p *proc, timeout time.Duration, what string, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		last = check(cctx)
		ccancel()
		if last == nil {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s: %s exited (%v) before ready: %w\n--- tail of %s:\n%s", what, p.name, p.err, last, p.log, p.tail(30))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not ready after %s: %w\n--- tail of %s:\n%s", what, timeout, errors.Join(last, ctx.Err()), p.log, p.tail(30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Sweep removes what a killed run of lab name left behind: it kills every
// process inside the namespaces "lbd-<name>-*" and deletes them. It touches
// no namespace of another name.
func Sweep(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("sweep %q: bad lab name", name)
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		return fmt.Errorf("sweep %s: ip netns list: %w: %s", name, err, out)
	}
	prefix := "lbd-" + name + "-"
	var errs []error
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line) // "name (id: 3)" or "name"
		if len(f) == 0 || !strings.HasPrefix(f[0], prefix) {
			continue
		}
		if err := removeNS(f[0]); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sweep %s: %w", name, err)
	}
	return nil
}

// removeNS kills the processes in ns, waits for them to go, then deletes ns.
func removeNS(ns string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command("ip", "netns", "pids", ns).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip netns pids %s: %w: %s", ns, err, out)
		}
		pids := strings.Fields(string(out))
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("namespace %s: pids %v survive SIGKILL", ns, pids)
		}
		for _, s := range pids {
			if pid, err := strconv.Atoi(s); err == nil && pid > 1 && pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %w: %s", ns, err, out)
	}
	return nil
}
