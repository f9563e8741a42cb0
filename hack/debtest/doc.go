// Package debtest holds the tests of lbd's Debian package (hack/pkg, built
// by `make deb`): its maintainer scripts with a stand-in systemctl, and, as
// root, the package itself, installed with dpkg on this machine, run and
// removed again. It has no code of its own; the tests live in the main
// module so that they can use internal/testkit.
package debtest
