package netfilter

import (
	"fmt"
	"strings"
	"testing"

	"github.com/lbd/lbd/internal/testkit"
	"github.com/lbd/lbd/lb"
)

// fullPayloadsFixture is two services against a kernel that holds a stale
// service chain and its jump, in both tables' lbd chains.
func fullPayloadsFixture(t *testing.T) (Ruleset, *saved) {
	t.Helper()
	web := svc("web", lb.TCP, 80, "10.246.82.2", "10.246.82.6")
	dns := svc("dns", lb.UDP, 53, "10.246.82.2")
	fp := planFull([]lb.Service{dns, web}, nil, DefaultOptions())
	stale := ServicePortChain("default/old:80/tcp")
	existing, err := parseSave([]byte(fmt.Sprintf(`*nat
:PREROUTING ACCEPT [0:0]
:%[1]s - [0:0]
:%[2]s - [0:0]
-A %[1]s -d 192.168.121.201/32 -p tcp -m tcp --dport 8080 -j %[2]s
-A %[2]s -j DNAT --to-destination 10.246.82.9:80
COMMIT
*filter
:INPUT ACCEPT [0:0]
:LBD-FILTER - [0:0]
COMMIT
`, ServicesChain, stale)))
	if err != nil {
		t.Fatal(err)
	}
	return fp.set, existing
}

// TestFullPayloads: the restores of a full sync, legacy (one) and
// nf_tables mode (batches of one chain).
func TestFullPayloads(t *testing.T) {
	for _, tt := range []struct {
		name  string
		batch int
	}{{"legacy", 0}, {"batches of 1", 1}} {
		t.Run(tt.name, func(t *testing.T) {
			set, existing := fullPayloadsFixture(t)
			var b strings.Builder
			for i, p := range fullPayloads(set, existing, tt.batch) {
				fmt.Fprintf(&b, "# restore %d\n%s", i+1, p)
			}
			testkit.Golden(t, []byte(b.String()))
		})
	}
}

// TestFullPayloadsOrder: in batches, the masquerade and filter chains come
// in the first restore, every chain is complete before LBD-SERVICES jumps
// to it, and the stale jump and chain go in the last.
func TestFullPayloadsOrder(t *testing.T) {
	set, existing := fullPayloadsFixture(t)
	ps := fullPayloads(set, existing, 1)
	first := string(ps[0])
	for _, c := range append([]string{PostroutingChain}, chainNames(set.Filter)...) {
		if !strings.Contains(first, ":"+c+" - [0:0]") {
			t.Errorf("first restore lacks %s:\n%s", c, first)
		}
	}
	declared := map[string]bool{}
	for i, p := range ps {
		for _, l := range strings.Split(string(p), "\n") {
			if c, ok := strings.CutPrefix(l, ":"); ok {
				declared[strings.Fields(c)[0]] = true
			}
			if strings.HasPrefix(l, "-A "+ServicesChain+" ") {
				target := l[strings.LastIndex(l, " ")+1:]
				if !declared[target] {
					t.Errorf("restore %d: %q jumps to %s before it is written", i+1, l, target)
				}
			}
		}
	}
	last := string(ps[len(ps)-1])
	stale := ServicePortChain("default/old:80/tcp")
	if !strings.Contains(last, "-X "+stale) || !strings.Contains(last, "-D "+ServicesChain) {
		t.Errorf("last restore does not remove the stale jump and chain:\n%s", last)
	}
}

func chainNames(cs []Chain) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}
