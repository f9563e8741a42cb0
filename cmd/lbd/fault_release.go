//go:build !faultinject

package main

// stepHook is nil in the release binary: no pass ever stops on purpose.
// The fault-injection build (go build -tags faultinject) replaces it.
func stepHook() func(string) { return nil }
