package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestShapesFollowDiscovery reads the command constants of lbd's
// discovery package from its source and checks that every command lbd
// builds from them passes allow: a change there that lbd-remote does not
// follow fails here, not on an operator's master. The legacy Endpoints
// commands are checked too, which the lab never reaches.
func TestShapesFollowDiscovery(t *testing.T) {
	c := discoveryConsts(t)
	for _, name := range []string{"servicesRaw", "slicesRaw", "endpointsRaw", "statusArgs", "watchTail", "watchEventsTail", "resServices", "resSlices", "resEndpoints"} {
		if _, ok := c[name]; !ok {
			t.Fatalf("discovery has no string constant %s any more: update this test and lbd-remote's shapes", name)
		}
	}
	// As discovery.requestTimeout renders --kubectl-timeout 60s.
	timeout := " --request-timeout=54s"
	cmds := []string{
		"kubectl" + c["servicesRaw"] + timeout,
		"kubectl" + c["slicesRaw"] + timeout,
		"kubectl" + c["endpointsRaw"] + timeout,
		"kubectl" + c["statusArgs"] + timeout,
	}
	for _, res := range []string{c["resServices"], c["resSlices"], c["resEndpoints"]} {
		cmds = append(cmds, "kubectl get "+res+c["watchTail"])       // as in Source.Watch
		cmds = append(cmds, "kubectl get "+res+c["watchEventsTail"]) // as in Cached.Watch
	}
	for _, cmd := range cmds {
		if _, err := allow(cmd); err != nil {
			t.Errorf("lbd sends %q, lbd-remote: %v", cmd, err)
		}
	}
}

// discoveryConsts returns the package-level string constants of
// ../../discovery that are built of literals, + and each other.
func discoveryConsts(t *testing.T) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob(filepath.Join("..", "..", "discovery", "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("discovery sources: %v (%d files)", err, len(files))
	}
	exprs := map[string]ast.Expr{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range af.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, s := range g.Specs {
				vs := s.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						exprs[n.Name] = vs.Values[i]
					}
				}
			}
		}
	}
	var eval func(e ast.Expr, depth int) (string, bool)
	eval = func(e ast.Expr, depth int) (string, bool) {
		if depth > 10 {
			return "", false
		}
		switch e := e.(type) {
		case *ast.BasicLit:
			if e.Kind != token.STRING {
				return "", false
			}
			s, err := strconv.Unquote(e.Value)
			return s, err == nil
		case *ast.Ident:
			x, ok := exprs[e.Name]
			if !ok {
				return "", false
			}
			return eval(x, depth+1)
		case *ast.BinaryExpr:
			if e.Op != token.ADD {
				return "", false
			}
			a, ok1 := eval(e.X, depth+1)
			b, ok2 := eval(e.Y, depth+1)
			return a + b, ok1 && ok2
		case *ast.ParenExpr:
			return eval(e.X, depth+1)
		}
		return "", false
	}
	out := map[string]string{}
	for name, e := range exprs {
		if s, ok := eval(e, 0); ok {
			out[name] = s
		}
	}
	return out
}
