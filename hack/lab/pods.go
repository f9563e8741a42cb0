package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// The ports every pod server listens on after StartPods.
var (
	// PodTCPPorts are the pods' HTTP ports; each answers "<pod name>\n".
	PodTCPPorts = []uint16{80, 8080, 8443}
	// PodUDPPorts are the pods' UDP echo ports; each datagram is answered
	// with "<pod name>\n".
	PodUDPPorts = []uint16{5353}
)

// StartPods builds the pod server into Dir and starts one in every pod
// namespace on PodTCPPorts and PodUDPPorts, returning when all of them
// listen. ctx bounds the build and the wait; the servers run until Close.
func (l *Lab) StartPods(ctx context.Context) error {
	bin := filepath.Join(l.Dir, "podserver")
	if err := buildPodserver(ctx, bin); err != nil {
		return fmt.Errorf("lab %s: %w", l.Name, err)
	}
	var procs []*proc
	for i, ns := range l.PodNS {
		p, err := l.startProc(l.PodNames[i], ns, bin, "-name", l.PodNames[i],
			"-tcp", joinPorts(PodTCPPorts), "-udp", joinPorts(PodUDPPorts))
		if err != nil {
			return fmt.Errorf("lab %s: %w", l.Name, err)
		}
		procs = append(procs, p)
	}
	for _, p := range procs {
		err := waitReady(ctx, p, 15*time.Second, "pod server", func(context.Context) error {
			b, err := os.ReadFile(p.log)
			if err != nil {
				return err
			}
			if !bytes.Contains(b, []byte("\nready\n")) {
				return errors.New(`no "ready" line yet`)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("lab %s: %w", l.Name, err)
		}
	}
	return nil
}

func joinPorts(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}

// buildPodserver builds hack/lab/podserver to out. The Go build cache makes
// every build after the first take well under a second.
func buildPodserver(ctx context.Context, out string) error {
	root, err := repoRoot()
	if err != nil {
		return fmt.Errorf("build podserver: %w", err)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./hack/lab/podserver")
	cmd.Dir = root
	if _, err := runCmd(ctx, cmd); err != nil {
		return fmt.Errorf("build podserver: %w", err)
	}
	return nil
}

// repoRoot finds the lbd module's root: from this source file's path when
// the binary was built without -trimpath, else from `go env GOMOD` in the
// working directory (tests run inside the module).
func repoRoot() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		root := filepath.Join(filepath.Dir(file), "..", "..")
		if _, err := os.Stat(filepath.Join(root, "hack", "lab", "podserver")); err == nil {
			return filepath.Clean(root), nil
		}
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find lbd module: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("find lbd module: not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}
