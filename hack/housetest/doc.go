// Package housetest holds no code: its test keeps the import rules of
// ../shared/STYLE.md ("The house") for every package of the module, from
// `go list`. A package the test does not know fails it until it is given
// its floor.
package housetest
