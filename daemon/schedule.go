package daemon

import "time"

// schedule decides when the daemon syncs. It is pure: the loop feeds it
// the time, so tests run it without sleeping.
type schedule struct {
	debounce, interval, resync time.Duration
	// polling: no working watch, so sync every interval.
	polling bool
	// pending is the time of the first change not yet synced; zero: none.
	pending time.Time
	// fullDue: a full sync was asked for (SIGHUP).
	fullDue bool
	// nextFull and nextPoll are when the next full resync and the next
	// poll are due.
	nextFull, nextPoll time.Time
}

// trigger notes a change seen at t. A burst of changes makes one sync,
// debounce after the first: later ones do not postpone it.
func (s *schedule) trigger(t time.Time) {
	if s.pending.IsZero() || t.Before(s.pending) {
		s.pending = t
	}
}

// requestFull asks for a full sync now.
func (s *schedule) requestFull() { s.fullDue = true }

// wake returns when the next sync is due; the zero time means now.
func (s *schedule) wake() time.Time {
	if s.fullDue {
		return time.Time{}
	}
	w := s.nextFull
	if !s.pending.IsZero() {
		w = earliest(w, s.pending.Add(s.debounce))
	}
	if s.polling {
		w = earliest(w, s.nextPoll)
	}
	return w
}

// due says whether a sync is due at now, and whether it is a full one.
func (s *schedule) due(now time.Time) (run, full bool) {
	full = s.fullDue || !now.Before(s.nextFull)
	run = full ||
		(!s.pending.IsZero() && !now.Before(s.pending.Add(s.debounce))) ||
		(s.polling && !now.Before(s.nextPoll))
	return run, full
}

// started notes a sync starting at now: it covers every change seen so far.
func (s *schedule) started(now time.Time, full bool) {
	s.pending = time.Time{}
	s.nextPoll = now.Add(s.interval)
	if full {
		s.fullDue = false
		s.nextFull = now.Add(s.resync)
	}
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// backoff is an exponential backoff with jitter: min, doubling up to max,
// each wait multiplied by a random factor in [1-jitter, 1+jitter].
type backoff struct {
	min, max time.Duration
	jitter   float64
	// rand returns a number in [0, 1).
	rand func() float64
	cur  time.Duration
}

// next returns the next wait.
func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	f := 1 + b.jitter*(2*b.rand()-1)
	return time.Duration(float64(b.cur) * f)
}

// reset starts over at min.
func (b *backoff) reset() { b.cur = 0 }
