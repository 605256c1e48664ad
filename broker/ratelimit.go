package broker

import (
	"sync"
	"time"
)

// limiter caps how many invitations one user may send per second through one
// broker (fixed one-second windows). Its memory is bounded by the number of
// users who sent in the current window: the map is dropped every window, so
// brokerd keeps no per-user state beyond a second. With N brokers behind the
// queue group a user gets at most N× the limit — it is a flood guard, not a
// billing meter.
type limiter struct {
	perSecond int
	mu        sync.Mutex
	window    int64
	counts    map[string]int
}

func newLimiter(perSecond int) *limiter {
	return &limiter{perSecond: perSecond, counts: map[string]int{}}
}

// allow counts one send by user at now and reports whether it is within the limit.
func (l *limiter) allow(user string, now time.Time) bool {
	if l.perSecond <= 0 {
		return true
	}
	w := now.Unix()
	l.mu.Lock()
	defer l.mu.Unlock()
	if w != l.window {
		l.window = w
		clear(l.counts)
	}
	l.counts[user]++
	return l.counts[user] <= l.perSecond
}
