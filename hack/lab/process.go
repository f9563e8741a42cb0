package lab

import (
	"fmt"
	"sort"
	"strings"
)

// Process is a long-running process the lab started with Spawn (or one of
// its own daemons). Close kills it with the rest.
type Process struct{ p *proc }

// Spawn starts argv inside namespace ns as a lab process: in its own
// process group, output appended to Dir/logs/<name>.log, pid in
// Dir/run/<name>.pid, killed by Close. name must not be running already;
// the lab's own names are "etcd", "kube-apiserver", "sshd" and the pod
// names. Use it for daemons under test, such as lbd itself in LBNS.
func (l *Lab) Spawn(name, ns string, argv ...string) (*Process, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("lab %s: spawn %s: no command", l.Name, name)
	}
	p, err := l.startProc(name, ns, argv...)
	if err != nil {
		return nil, fmt.Errorf("lab %s: %w", l.Name, err)
	}
	return &Process{p}, nil
}

// Pid is the process id (of `ip netns exec`, which execs into argv[0]).
func (p *Process) Pid() int { return p.p.cmd.Process.Pid }

// Done is closed when the process has exited; Err then says how.
func (p *Process) Done() <-chan struct{} { return p.p.done }

// Err is the exit status once Done is closed, nil before.
func (p *Process) Err() error {
	if !p.p.exited() {
		return nil
	}
	return p.p.err
}

// Stop kills the process group with SIGKILL and waits for the exit.
func (p *Process) Stop() error { return p.p.stop() }

// LogPath is the file holding the process's stdout and stderr.
func (p *Process) LogPath() string { return p.p.log }

// Tail returns the last n lines of the process's log.
func (p *Process) Tail(n int) string { return p.p.tail(n) }

// LogTails returns the last n lines of every lab process's log, for a
// failing test to print.
func (l *Lab) LogTails(n int) string {
	l.mu.Lock()
	procs := make([]*proc, 0, len(l.procs))
	for _, p := range l.procs {
		procs = append(procs, p)
	}
	l.mu.Unlock()
	sort.Slice(procs, func(i, j int) bool { return procs[i].name < procs[j].name })
	var b strings.Builder
	for _, p := range procs {
		fmt.Fprintf(&b, "--- tail of %s:\n%s\n", p.log, p.tail(n))
	}
	return b.String()
}
