// Counters, HDR latency histograms and command-error accounting.
package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/protocol"
)

// Latency stages (the JSON names).
const (
	stSendToRing         = "send_to_ring"             // Send called → callee's OnRemoteInvitationReceived
	stSendToReceived     = "send_to_received_by_peer" // Send called → caller's OnLocalInvitationReceivedByPeer
	stAcceptToAccepted   = "accept_to_accepted"       // callee's Accept called → caller's OnLocalInvitationAccepted
	stHangupToFree       = "hangup_to_free"           // Hangup called → OnCallEnded at the other party
	stTimerLateness      = "timer_lateness"           // first terminal callback (loadgen clock) − Deadline of the last non-terminal view
	stTimerLatenessBroke = "timer_lateness_broker"    // EndedAt of the terminal view − that Deadline (both broker clock)
	stSendReply          = "send_reply"               // Send round trip
	stScheduleLag        = "schedule_lag"             // open loop: actual start − scheduled start
	stHistory            = "history_read"             // --history-reads: a history page's round trip
)

var stageOrder = []string{stSendToRing, stSendToReceived, stAcceptToAccepted, stHangupToFree, stTimerLateness, stTimerLatenessBroke, stSendReply, stScheduleLag, stHistory}

// stats is what the run measured; safe for concurrent use.
type stats struct {
	started, completed, skipped, errs atomic.Int64
	skippedInflight                   atomic.Int64 // of skipped: --max-inflight was reached
	poolWaitNs                        atomic.Int64 // closed loop: workers' time spent waiting for an idle pair of users

	mu          sync.Mutex
	hists       map[string]*hdrhistogram.Histogram
	recent      map[string]*hdrhistogram.Histogram // a few stages since the last take (the timeline)
	early       map[string]int64                   // negative latencies (clock skew or an early timer), recorded as 0
	outcomes    map[string]int64
	byBehaviour map[string]map[string]int64 // behaviour → outcome → count
	errors      map[string]int64            // code → count
	errorsByCmd map[string]int64            // "verb code" → count
	notes       map[string]int64            // noteworthy, not violations (e.g. unexpected busy)

	windowStart, windowEnd        time.Time
	terminalInWindow, accInWindow int64
}

func newStats() *stats {
	s := &stats{hists: map[string]*hdrhistogram.Histogram{}, early: map[string]int64{}, outcomes: map[string]int64{},
		byBehaviour: map[string]map[string]int64{}, errors: map[string]int64{}, errorsByCmd: map[string]int64{}, notes: map[string]int64{}}
	for _, st := range stageOrder {
		s.hists[st] = hdrhistogram.New(1, int64(time.Hour/time.Microsecond), 3)
	}
	s.recent = map[string]*hdrhistogram.Histogram{}
	for _, st := range []string{stSendToRing, stAcceptToAccepted} {
		s.recent[st] = hdrhistogram.New(1, int64(time.Hour/time.Microsecond), 3)
	}
	return s
}

// record adds one latency to a stage.
func (s *stats) record(stage string, d time.Duration) {
	us := d.Microseconds()
	s.mu.Lock()
	defer s.mu.Unlock()
	if us < 0 {
		s.early[stage]++
		us = 0
	}
	_ = s.hists[stage].RecordValue(us) // beyond an hour: dropped
	if h := s.recent[stage]; h != nil {
		_ = h.RecordValue(us)
	}
}

// take returns p50 and p99 (ms) and the count of stage's latencies since
// the last take, and starts afresh.
func (s *stats) take(stage string) (p50, p99 float64, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.recent[stage]
	p50, p99, n = float64(h.ValueAtQuantile(50))/1000, float64(h.ValueAtQuantile(99))/1000, h.TotalCount()
	h.Reset()
	return p50, p99, n
}

// note counts something worth reporting that is not an invariant violation.
func (s *stats) note(what string) {
	s.mu.Lock()
	s.notes[what]++
	s.mu.Unlock()
}

// cmdError counts a failed command by its wire code. Errors that are not
// typed protocol errors are TIMEOUT (no reply in time) or CLIENT (anything
// else: connection closed, client closed, ...).
func (s *stats) cmdError(verb string, err error) {
	if err == nil {
		return
	}
	code := errCode(err)
	s.errs.Add(1)
	s.mu.Lock()
	s.errors[code]++
	s.errorsByCmd[verb+" "+code]++
	s.mu.Unlock()
}

// errCode is "" for nil: a command that succeeded has no error code.
func errCode(err error) string {
	var pe *protocol.Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &pe):
		return string(protocol.CodeOf(err))
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return "TIMEOUT"
	}
	return "CLIENT"
}

// errClass names what kind of error err is, for a note: its code, and for
// a client-side error (CLIENT) the sentinel or type behind it.
func errClass(err error) string {
	code := errCode(err)
	if code != "CLIENT" {
		return code
	}
	for _, e := range []error{context.Canceled, client.ErrClosed, client.ErrNotStarted, nats.ErrConnectionClosed, nats.ErrConnectionReconnecting, nats.ErrDisconnected} {
		if errors.Is(err, e) {
			return code + " (" + e.Error() + ")"
		}
	}
	return fmt.Sprintf("%s (%T)", code, err)
}

// outcome counts a completed invitation.
func (s *stats) outcome(b behaviour, outcome string) {
	s.mu.Lock()
	s.outcomes[outcome]++
	m := s.byBehaviour[b.String()]
	if m == nil {
		m = map[string]int64{}
		s.byBehaviour[b.String()] = m
	}
	m[outcome]++
	s.mu.Unlock()
}

// inWindow counts terminal outcomes and accepted lifecycles that happened
// while invitations were being started: the throughput figures.
func (s *stats) inWindow(terminalAt, acceptedDoneAt time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := func(t time.Time) bool {
		return !t.IsZero() && !s.windowStart.IsZero() && !t.Before(s.windowStart) && (s.windowEnd.IsZero() || !t.After(s.windowEnd))
	}
	if in(terminalAt) {
		s.terminalInWindow++
	}
	if in(acceptedDoneAt) {
		s.accInWindow++
	}
}

// latency is one stage's summary, in milliseconds.
type latency struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
	Early int64   `json:"early,omitempty"`
}

func (s *stats) latencies() map[string]latency {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]latency{}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	for st, h := range s.hists {
		out[st] = latency{Count: h.TotalCount(), P50: ms(h.ValueAtQuantile(50)), P99: ms(h.ValueAtQuantile(99)),
			P999: ms(h.ValueAtQuantile(99.9)), Max: ms(h.Max()), Early: s.early[st]}
	}
	return out
}
