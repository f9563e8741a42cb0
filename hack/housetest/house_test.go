package housetest

import (
	"bufio"
	"bytes"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/lbd/lbd"

// middle is the middle floor: each imports only lb.
var middle = []string{"discovery", "store", "ipam", "vip", "hostcheck", "netfilter", "nft", "haproxy", "keepalived"}

// allowed returns the packages of the module that pkg (relative to the
// module) may import outside its tests, and false for a package on no
// floor.
func allowed(pkg string) (func(dep string) bool, bool) {
	only := func(deps ...string) func(string) bool {
		return func(d string) bool { return slices.Contains(deps, d) }
	}
	switch {
	case pkg == "lb", pkg == "internal/testkit":
		return only(), true // leaves
	case pkg == "cmd/lbd-remote":
		// The master's forced command: stdlib only, nothing of lbd's.
		return only(), true
	case slices.Contains(middle, pkg), pkg == "reconcile":
		return only("lb"), true
	case pkg == "cli", pkg == "explain":
		// The command line (flags, env, help, man, completion) and the
		// answer of lbd explain know nothing of the parts: lb only.
		return only("lb"), true
	case pkg == "report":
		// The printers print lb's types and those of the middle floor
		// and explain; never reconcile, daemon or cli.
		return func(d string) bool { return d == "lb" || d == "explain" || slices.Contains(middle, d) }, true
	case pkg == "daemon":
		return only("reconcile", "lb"), true
	case pkg == "cmd/lbd":
		// The wiring imports every floor, but no tool or test helper.
		return func(d string) bool { return !strings.HasPrefix(d, "hack/") && d != "internal/testkit" }, true
	case strings.HasPrefix(pkg, "hack/"):
		// Tools and test helpers (the lab, the bench, the demo) use the
		// floors and the test helpers, never the wiring.
		return func(d string) bool { return !strings.HasPrefix(d, "cmd/") }, true
	}
	return nil, false
}

// imports lists the module's packages with the module's packages each
// imports outside its tests, both relative to the module.
func imports(t *testing.T) map[string][]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, module+"/...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, err.(*exec.ExitError).Stderr)
	}
	got := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		pkg := strings.TrimPrefix(f[0], module+"/")
		got[pkg] = nil
		for _, d := range f[1:] {
			if rel, ok := strings.CutPrefix(d, module+"/"); ok {
				got[pkg] = append(got[pkg], rel)
			}
		}
	}
	return got
}

// TestImportRules: lb is a leaf; the middle floor imports only lb;
// reconcile, cli and explain only lb; report lb, explain and the middle
// floor; daemon reconcile and lb; only cmd/lbd wires them all.
// Test files are not looked at (they may use internal/testkit, hack/lab
// and reconcile's interfaces).
func TestImportRules(t *testing.T) {
	pkgs := imports(t)
	for _, must := range []string{"lb", "reconcile", "daemon", "hostcheck", "netfilter", "cli", "report", "explain", "cmd/lbd"} {
		if _, ok := pkgs[must]; !ok {
			t.Errorf("go list does not list %s: the test looks at the wrong module", must)
		}
	}
	for pkg, deps := range pkgs {
		ok, known := allowed(pkg)
		if !known {
			t.Errorf("package %s is on no floor of STYLE.md's house: give it one in house_test.go", pkg)
			continue
		}
		for _, d := range deps {
			if !ok(d) {
				t.Errorf("%s imports %s, which STYLE.md's import rules forbid", pkg, d)
			}
		}
	}
}
