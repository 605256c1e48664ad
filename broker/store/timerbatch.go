package store

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// Batched timers. One ADR-51 schedule per invitation costs the timer
// stream four replicated operations per call (the schedule stored, purged
// when it fires, the fired message stored, and removed when acknowledged),
// though nearly every call ends long before its deadline. A TimerBatcher
// gathers the timers its broker arms within a window into one schedule per
// deadline slot, whatever their partitions: the same durability (a
// revision is acknowledged only once the batch holding its timer is
// stored, so a broker that dies first has it redelivered), a fraction of
// the operations, and at most TimerSlot of extra lateness.
const (
	// TimerSlot: deadlines are rounded up to a multiple of it; one batch
	// fires at its slot's end, when every deadline in it is due.
	TimerSlot = 100 * time.Millisecond
	// MaxTimerBatch bounds the deadlines in one schedule (its handling
	// must stay well within the timer consumer's AckWait).
	MaxTimerBatch = 256
)

// maxTimerBatchLen bounds the body of a batch: MaxTimerBatch entries at
// their longest id.
const maxTimerBatchLen = 8 + MaxTimerBatch*(subjects.MaxIDLen+24)

// TimerEntry is one invitation's deadline (Unix ms) in a batch.
type TimerEntry struct {
	ID string `msgpack:"i"`
	At int64  `msgpack:"a"`
}

// DecodeTimerBatch reads the body of a fired batch.
func DecodeTimerBatch(data []byte) ([]TimerEntry, error) {
	var es []TimerEntry
	if err := protocol.Unmarshal(data, &es, "timer batch", maxTimerBatchLen); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	for _, e := range es {
		if err := subjects.ValidateID(e.ID); err != nil {
			return nil, fmt.Errorf("store: timer batch: %w", err)
		}
	}
	return es, nil
}

// ArmTimers arms one durable timer that fires, at Unix ms at, the batch of
// entries (of any partitions) from partition p's timer stream; at is no
// earlier than any of theirs.
func (s *Store) ArmTimers(ctx context.Context, p subjects.Partition, at int64, es []TimerEntry) error {
	data, err := msgpack.Marshal(es)
	if err != nil {
		return fmt.Errorf("store: arm timers: %w", err)
	}
	batch := nuid.Next()
	m := nats.NewMsg(p.TimerBatchSchedule(batch))
	m.Header.Set("Nats-Schedule", "@at "+time.UnixMilli(at).UTC().Format(time.RFC3339Nano))
	m.Header.Set("Nats-Schedule-Target", p.TimerBatchFire(batch))
	m.Data = data
	s.stats.timers.Add(1)
	seq, err := s.publish(ctx, m)
	if err != nil {
		return fmt.Errorf("store: arm %d timers: %w", len(es), err)
	}
	for _, e := range es {
		s.cache.armed(e.ID, e.At)
	}
	s.tellArmed(seq, data)
	return nil
}

// TimerBatcher arms timers in batches (ArmTimers): what Arm is given within
// its window goes out as one schedule per slot, whatever the partitions of
// its invitations (a fired entry is handled by invitation id, wherever its
// batch was stored). Each flush stores its schedules on the next partition's
// timer stream in turn, so the batches spread over the partitions' leaders,
// and a flush that fails on one is armed again, later, on another.
// Grouping by partition as well cost one schedule per partition per slot
// and broker, a floor that grew with P (docs/architecture.md, "Timers").
//
// A timer waits at least half a window before it is stored, and is not
// stored at all if by then its invitation no longer needs it
// (lifecycle.Record.NeedsTimer, from the record cache, which this broker's
// own writes and projections and its peers' cache gossip keep current): an
// ACCEPTING invitation's accept-ack timer is superseded by ACCEPTED within
// the caller's round trip in nearly every call, and a call that ends while
// its timer waits needs none. The revision that asked for it is then
// acknowledged as if it were stored: a committed revision that needs no
// timer is final for timers.
type TimerBatcher struct {
	s       *Store
	window  time.Duration
	in      chan armRequest
	done    chan struct{}
	once    sync.Once
	flushes int // the flushes so far (run's goroutine only): picks the partition
}

type armRequest struct {
	e    TimerEntry
	done func(error)
	at   time.Time // when it was handed over
}

// NewTimerBatcher starts a batcher that gathers timers for window before
// arming them. Close it before the store's connection.
func (s *Store) NewTimerBatcher(window time.Duration) *TimerBatcher {
	tb := &TimerBatcher{s: s, window: window, in: make(chan armRequest, 4*MaxTimerBatch), done: make(chan struct{})}
	go tb.run()
	return tb
}

// Arm arms invitation id's timer at Unix ms at with the next batch, and
// calls done with the outcome once that batch is stored (or failed, or the
// timer turned out to be needed no more). It waits only while earlier
// batches are being written and the queue is full.
func (tb *TimerBatcher) Arm(id string, at int64, done func(error)) {
	tb.in <- armRequest{e: TimerEntry{ID: id, At: at}, done: done, at: time.Now()}
}

// Close arms what was handed over and stops. Arm must not be called after.
func (tb *TimerBatcher) Close() {
	tb.once.Do(func() { close(tb.in) })
	<-tb.done
}

// DueSoon: a timer due within it fires about now anyway. The batcher
// stores one at the next flush, however recently it was handed over; the
// broker does not check that one an earlier revision asked for is armed.
const DueSoon = time.Second

// run gathers timers and, every window while some wait, flushes those
// handed over at least half a window before (or DueSoon); the others wait
// for the next flush. So each timer is stored half a window to a window and
// a half after Arm, and flushes are at least a window apart. A backlog of
// cap(in) timers is flushed at once, whatever their age.
//
// A timer handed over again while it is held (the same invitation and
// deadline) joins the one held: it is stored once, and both are told. That
// is the common case, not a corner: the callee's ack of a ringing
// invitation is projected within the window that holds the timer its send
// asked for, and relies on that timer (the broker's timerLost), which is
// not armed yet, so it asks again. Stored twice, every such timer would
// fire twice, its two timeouts racing each other.
func (tb *TimerBatcher) run() {
	defer close(tb.done)
	var (
		held  []armRequest
		index = map[TimerEntry]int{} // position in held
		tick  = time.NewTimer(tb.window)
		ticks <-chan time.Time // nil while nothing waits
	)
	tick.Stop()
	reindex := func() {
		clear(index)
		for i, r := range held {
			index[r.e] = i
		}
	}
	for {
		select {
		case r, ok := <-tb.in:
			if !ok {
				tb.flush(held, time.Now().Add(tb.window)) // all of them, however young
				return
			}
			if i, ok := index[r.e]; ok {
				held[i].done = tellBoth(held[i].done, r.done)
				continue
			}
			index[r.e] = len(held)
			held = append(held, r)
			switch {
			case len(held) >= cap(tb.in):
				held = tb.flush(held, time.Now().Add(tb.window))
				reindex()
			case ticks == nil:
				tick.Reset(tb.window)
				ticks = tick.C
			}
		case now := <-ticks:
			ticks = nil
			held = tb.flush(held, now)
			reindex()
			if len(held) > 0 {
				tick.Reset(tb.window)
				ticks = tick.C
			}
		}
	}
}

// tellBoth reports an outcome to a, then to b.
func tellBoth(a, b func(error)) func(error) {
	return func(err error) { a(err); b(err) }
}

// flush stores, on the next partition's timer stream, the timers of held
// handed over by ripe minus half a window or due within DueSoon, drops those no
// longer needed or already stored (KnownArmed: by this store since, or by
// a peer, which said so in its gossip), and returns the others (in order).
func (tb *TimerBatcher) flush(held []armRequest, ripe time.Time) []armRequest {
	var (
		out, young []armRequest
		cutoff     = ripe.Add(-tb.window / 2)
		due        = ripe.Add(DueSoon).UnixMilli()
	)
	for _, r := range held {
		switch {
		case r.at.After(cutoff) && r.e.At > due:
			young = append(young, r)
		case tb.needless(r.e.ID), tb.s.cache.knownArmed(r.e.ID, r.e.At):
			tb.s.stats.skipped.Add(1)
			r.done(nil)
		default:
			out = append(out, r)
		}
	}
	if len(out) > 0 {
		tb.store(subjects.Partition(tb.flushes%len(tb.s.parts)), out)
		tb.flushes++
	}
	return young
}

// needless reports whether the cache holds a revision of invitation id
// that needs no timer (lifecycle.Record.NeedsTimer).
func (tb *TimerBatcher) needless(id string) bool {
	rec, ok := tb.s.cache.invitation(id)
	return ok && !rec.NeedsTimer()
}

// store arms batch on partition p's timer stream as one schedule per slot
// (split at MaxTimerBatch), written in parallel, and reports to each
// request.
func (tb *TimerBatcher) store(p subjects.Partition, batch []armRequest) {
	slot := TimerSlot.Milliseconds()
	groups := map[int64][]armRequest{}
	var order []int64
	for _, r := range batch {
		at := (r.e.At + slot - 1) / slot * slot
		if len(groups[at]) == 0 {
			order = append(order, at)
		}
		groups[at] = append(groups[at], r)
	}
	var wg sync.WaitGroup
	for _, k := range order {
		for rs := range slices.Chunk(groups[k], MaxTimerBatch) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				es := make([]TimerEntry, len(rs))
				for i, r := range rs {
					es[i] = r.e
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := tb.s.ArmTimers(ctx, p, k, es)
				cancel()
				for _, r := range rs {
					r.done(err)
				}
			}()
		}
	}
	wg.Wait()
}
