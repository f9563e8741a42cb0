//go:build faultinject

package main

import (
	"os"
	"syscall"
)

// stepHook, in the fault-injection build only, kills lbd with SIGKILL at
// the step of a pass that LBD_CRASH_AT names (reconcile.Steps), so the
// end-to-end tests can prove that the next pass heals from there.
func stepHook() func(string) {
	at := os.Getenv("LBD_CRASH_AT")
	if at == "" {
		return nil
	}
	return func(step string) {
		if step == at {
			os.Stderr.WriteString("lbd: fault injection: SIGKILL at step " + step + "\n")
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
}
