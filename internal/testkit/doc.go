// Package testkit holds what lbd's tests share: the one gate for tests
// that need root (network namespaces, iptables, sshd), the golden-file
// helper, and WaitFor. It imports nothing of lbd's, so every package's
// tests, internal or external, may use it.
package testkit
