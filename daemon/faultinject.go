//go:build faultinject

package daemon

import (
	"os"
	"syscall"
)

// StepHook, in the fault-injection build only (go build -tags
// faultinject), is the reconcile.Options.Step that kills lbd with
// SIGKILL at the step of a pass that LBD_CRASH_AT names
// (reconcile.Steps), so the end-to-end tests can prove that the next pass
// heals from there. Without LBD_CRASH_AT it is nil.
func StepHook() func(string) {
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
