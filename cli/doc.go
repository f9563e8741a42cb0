// Package cli is lbd's command line: the commands, the flags and their
// LBD_<NAME> environment variables, parsed and checked before any I/O
// into a typed [Config], and the texts generated from the same
// definitions: the usage and per-command help, the man page lbd(1) in
// roff, and the bash and zsh completion scripts.
//
// [Parse] reads the environment, then the command line, over the defaults
// it is given and returns an [Invocation]: the command, its arguments and
// the Config. Every flag may stand before or after the command, with one
// dash or two; the command line wins over the environment; an environment
// variable set to the empty string sets its flag empty, an unset one
// leaves the default.
//
// cli knows nothing of the backends, the store or the master: a default
// owned by another package (haproxy's paths, discovery's timeouts, ...)
// comes in through the Config handed to Parse, which cmd/lbd fills from
// [Defaults] and those packages. cli imports lb only.
package cli
