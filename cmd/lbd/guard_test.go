package main

import (
	"errors"
	"io"
	"testing"

	"github.com/lbd/lbd/cli"
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
		{done, nil, cli.ExitOK},
		{held, nil, cli.ExitHeld},
		{nil, errors.New("discover: down"), cli.ExitFail},
	} {
		if got := a.passExit(tt.res, tt.err); got != tt.want {
			t.Errorf("passExit(%v, %v) = %d, want %d", tt.res, tt.err, got, tt.want)
		}
	}
}
