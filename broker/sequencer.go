package broker

import (
	"sync"

	"github.com/ringer-dev/ringer/subjects"
)

// sequencer hands a user's commands to the workers one at a time, in the
// order they arrived. Commands of one user mostly act on the same records:
// a callee's device acknowledges a ring and accepts it a moment later, and
// run side by side the second would lose its compare-and-set to the first,
// then read the record again and retry (at the R1 peak, 0.9 conflicts per
// accepted call: a failed write and a leader read). One after the other,
// the second starts from the record the first left in the cache.
//
// Only the users with a command in hand have an entry, so it grows with
// the commands in flight, not with the users. A user with maxQueued
// commands waiting already is not made to wait more: further commands go
// to the workers at once, unordered (compare-and-set keeps them correct;
// order only saves conflicts), so a user that floods cannot hold commands
// back unboundedly, and the subscription's goroutine never waits on one
// user.
type sequencer struct {
	mu    sync.Mutex
	users map[string][]job // user → commands waiting behind the one in hand
}

// sequenced reports whether a user's commands of verb go through the
// sequencer. A history read acts on no record the others act on, and reads
// another stream, which may be slow to answer while the records' is not
// (a history stream without a leader: journal's leader check): no command
// of its user waits behind it.
func sequenced(verb string) bool { return verb != subjects.VerbHistory }

// maxQueued bounds the commands of one user waiting in a sequencer.
const maxQueued = 8

func newSequencer() *sequencer { return &sequencer{users: map[string][]job{}} }

// admit reports whether j (a command of user) goes to the workers now;
// false means it waits behind the user's command in hand, and is handed
// on by next. An admitted job with j.sequenced set must be followed by a
// call to next once served.
func (s *sequencer) admit(user string, j *job) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	waiting, busy := s.users[user]
	switch {
	case !busy:
		s.users[user] = nil
		j.sequenced = true
		return true
	case len(waiting) < maxQueued:
		s.users[user] = append(waiting, *j)
		return false
	default:
		return true // a flood: unordered
	}
}

// next returns the user's next waiting command, now in hand, once the one
// before it is served; false when none waits (the user's entry is gone).
func (s *sequencer) next(user string) (job, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	waiting := s.users[user]
	if len(waiting) == 0 {
		delete(s.users, user)
		return job{}, false
	}
	j := waiting[0]
	waiting[0] = job{}
	s.users[user] = waiting[1:]
	return j, true
}
