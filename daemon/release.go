//go:build !faultinject

package daemon

// StepHook is nil in the release binary: no pass ever stops on purpose.
// The fault-injection build (go build -tags faultinject) replaces it.
func StepHook() func(string) { return nil }
