package main

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/lbd/lbd/lb"
	"github.com/lbd/lbd/reconcile"
)

func TestPassExit(t *testing.T) {
	a := &app{stderr: io.Discard}
	held := &reconcile.Result{Plan: &reconcile.Plan{Held: []lb.Skipped{{Key: "default/a", Reason: "guard"}}}}
	done := &reconcile.Result{Plan: &reconcile.Plan{}}
	for _, tt := range []struct {
		res  *reconcile.Result
		err  error
		want int
	}{
		{done, nil, exitOK},
		{held, nil, exitHeld},
		{nil, errors.New("discover: down"), exitFail},
	} {
		if got := a.passExit(tt.res, tt.err); got != tt.want {
			t.Errorf("passExit(%v, %v) = %d, want %d", tt.res, tt.err, got, tt.want)
		}
	}
}

func TestAllowDeleteArgs(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string // in stderr; "" = the command got past argument checks
	}{
		{[]string{"apply", "default/a"}, ""},
		{[]string{"apply", "--allow-delete", "default/a", "web/b"}, ""},
		{[]string{"plan", "--allow-delete", "default/a"}, ""},
		{[]string{"apply", "nonamespace"}, `--allow-delete "nonamespace": want namespace/name`},
		{[]string{"--allow-delete", "default/a"}, "--allow-delete needs lbd apply"},
		{[]string{"run", "--allow-delete", "default/a"}, "--allow-delete needs lbd apply"},
		{[]string{"status", "default/a"}, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stderr strings.Builder
			// --master is left empty, so a command that gets past the
			// argument checks fails on it (or on the missing store).
			args := append([]string{"--db", t.TempDir() + "/db", "--log-file", ""}, tt.args...)
			code := run(t.Context(), args, noEnv, io.Discard, &stderr)
			if tt.wantErr == "" {
				if strings.Contains(stderr.String(), "allow-delete") || strings.Contains(stderr.String(), "unexpected arguments") {
					t.Errorf("arguments refused: %s", stderr.String())
				}
				return
			}
			if code != exitFail || !strings.Contains(stderr.String(), tt.wantErr) {
				t.Errorf("exit %d, stderr %q; want 1 and %q", code, stderr.String(), tt.wantErr)
			}
		})
	}
}
