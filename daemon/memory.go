package daemon

import "runtime/debug"

// DefaultMemoryLimit is the soft memory limit lbd gives the Go runtime
// when GOMEMLIMIT is unset: 110 MiB. The heap then grows less far past
// what is live before the collector runs, which keeps a pass at 10,000
// services x 10 endpoints at 121-128 MB of peak RSS instead of 133-148
// (hack/bench/cronpass, nftables, no change), for 1-2% more CPU in the
// collector and no wall time that could be told from the noise. It is
// soft: a larger cluster whose live heap needs more gets it, the
// collector then taking more CPU.
const DefaultMemoryLimit = 110 << 20

// LimitMemory sets the runtime's soft memory limit to limit bytes unless
// the operator chose one with GOMEMLIMIT (looked up with lookup, as
// os.LookupEnv does), and returns the limit now in force. limit <= 0
// sets none.
func LimitMemory(lookup func(string) (string, bool), limit int64) int64 {
	if _, set := lookup("GOMEMLIMIT"); set || limit <= 0 {
		return debug.SetMemoryLimit(-1)
	}
	debug.SetMemoryLimit(limit)
	return debug.SetMemoryLimit(-1)
}
