// Package report prints what lbd's commands answer, as text a person
// reads or (-o json) as one indented JSON document: the plan of lbd plan,
// the stored mapping of lbd status, the verdicts of lbd check and the
// answer of lbd explain.
//
// Every printer is a pure function of typed values and a writer; the
// commands gather those values (from the store, the master, the data
// plane) and pick the format. An unknown format is an error before
// anything is written. The texts are what scripts and the README show:
// change them only on purpose (the golden files under testdata hold
// them).
//
// report imports lb and the types it prints of the middle floor
// (hostcheck's verdicts, discovery's escaping of the master's text) and
// explain; never reconcile, daemon or cli.
package report
