package broker

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiter is a token bucket per user (golang.org/x/time/rate): a user may
// make burst commands at once and rate per second on average. Its memory is
// bounded by the users active in the last sweep period: a bucket that has
// filled up again is indistinguishable from a new one, so it is dropped.
// With N brokers behind the queue group a user gets up to N times the
// limit: it bounds what one user can make a broker do, it is not a meter.
type limiter struct {
	rate  rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
	swept   time.Time
}

// sweepEvery is how often full buckets are dropped.
const sweepEvery = 10 * time.Second

// newLimiter allows perSecond on average and burst at once; perSecond <= 0
// allows everything.
func newLimiter(perSecond float64, burst int) *limiter {
	return &limiter{rate: rate.Limit(perSecond), burst: max(burst, 1), buckets: map[string]*rate.Limiter{}}
}

// allow takes one token of user's bucket at now, if there is one.
func (l *limiter) allow(user string, now time.Time) bool {
	if l.rate <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) >= sweepEvery {
		for u, b := range l.buckets {
			if b.TokensAt(now) >= float64(l.burst) {
				delete(l.buckets, u)
			}
		}
		l.swept = now
	}
	b := l.buckets[user]
	if b == nil {
		b = rate.NewLimiter(l.rate, l.burst)
		l.buckets[user] = b
	}
	return b.AllowN(now, 1)
}
