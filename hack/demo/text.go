package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/lbd/lbd/hack/lab"
)

// manifest is the notes' nginx service with the given ready endpoints, as
// Service, Endpoints and EndpointSlice.
func manifest(ready []netip.Addr) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# The design notes' nginx service, written by make demo. No
# controller-manager runs in the lab, so the Endpoints and the EndpointSlice
# are written here, as the controllers would write them.
apiVersion: v1
kind: Service
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  clusterIP: %[3]s
  externalIPs: [%[4]s]
  ports: [{port: %[5]d, protocol: TCP, targetPort: %[5]d}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: %[1]s, namespace: %[2]s}
subsets:
- ports: [{port: %[5]d, protocol: TCP}]
  addresses:
`, svcName, svcNS, clusterIP, lab.LBExternalIP, svcPort)
	for _, a := range ready {
		fmt.Fprintf(&b, "  - {ip: %s}\n", a)
	}
	fmt.Fprintf(&b, `---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %[1]s-1, namespace: %[2]s, labels: {kubernetes.io/service-name: %[1]s}}
addressType: IPv4
ports: [{name: "", port: %[3]d, protocol: TCP}]
endpoints:
`, svcName, svcNS, svcPort)
	for _, a := range ready {
		fmt.Fprintf(&b, "- {addresses: [%s], conditions: {ready: true}}\n", a)
	}
	return b.String()
}

// lbManifest is a Service of type LoadBalancer beside the notes' one, on
// the same pods: lbd gives it an address from the demo's pool and writes
// it into its status.
func lbManifest(ready []netip.Addr) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# A LoadBalancer Service, written by make demo: lbd allocates its address.
apiVersion: v1
kind: Service
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  type: LoadBalancer
  ports: [{port: %[3]d, protocol: TCP, targetPort: %[3]d}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: %[1]s-1, namespace: %[2]s, labels: {kubernetes.io/service-name: %[1]s}}
addressType: IPv4
ports: [{name: "", port: %[3]d, protocol: TCP}]
endpoints:
`, lbSvcName, svcNS, svcPort)
	for _, a := range ready {
		fmt.Fprintf(&b, "- {addresses: [%s], conditions: {ready: true}}\n", a)
	}
	return b.String()
}

// without returns as without its i-th element.
func without(as []netip.Addr, i int) []netip.Addr {
	out := append([]netip.Addr(nil), as[:i]...)
	return append(out, as[i+1:]...)
}

// flagLines renders flag/value pairs one pair a line, for a shell script
// continued with backslashes.
func flagLines(pairs []string) string {
	var b strings.Builder
	for i := 0; i+1 < len(pairs); i += 2 {
		fmt.Fprintf(&b, "  %s \\\n", shellLine(pairs[i:i+2]))
	}
	return b.String()
}

// shellLine quotes args for a POSIX shell where needed.
func shellLine(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@,%+") == "" {
			q[i] = a
			continue
		}
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// indent is a writer that indents every line written to w.
func indent(w io.Writer) io.Writer { return &indenter{w: w, bol: true} }

type indenter struct {
	w   io.Writer
	bol bool
}

func (in *indenter) Write(p []byte) (int, error) {
	var b []byte
	for _, c := range p {
		if in.bol {
			b = append(b, "    "...)
		}
		b = append(b, c)
		in.bol = c == '\n'
	}
	if _, err := in.w.Write(b); err != nil {
		return 0, err
	}
	return len(p), nil
}

// moduleRoot is the lbd module's root directory, from `go env GOMOD`.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the lbd module: go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("find the lbd module: run from inside the lbd repository")
	}
	return filepath.Dir(gomod), nil
}
