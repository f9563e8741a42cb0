package daemon

import (
	"math"
	"runtime/debug"
	"testing"
)

// noMemoryLimit is the runtime's "no limit".
const noMemoryLimit = math.MaxInt64

// TestLimitMemory: without GOMEMLIMIT lbd sets its own soft limit; with
// it, the operator's stands.
func TestLimitMemory(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(noMemoryLimit))
	tests := []struct {
		name  string
		env   map[string]string
		limit int64
		want  int64
	}{
		{"unset: lbd's limit", nil, DefaultMemoryLimit, DefaultMemoryLimit},
		{"GOMEMLIMIT set: left alone", map[string]string{"GOMEMLIMIT": "1GiB"}, DefaultMemoryLimit, noMemoryLimit},
		{"no limit asked", nil, 0, noMemoryLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			debug.SetMemoryLimit(noMemoryLimit)
			lookup := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			if got := LimitMemory(lookup, tt.limit); got != tt.want {
				t.Errorf("LimitMemory = %d, want %d", got, tt.want)
			}
			if got := debug.SetMemoryLimit(-1); got != tt.want {
				t.Errorf("runtime limit = %d, want %d", got, tt.want)
			}
		})
	}
}
