package store

import (
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/subjects"
)

// Cache gossip keeps the record caches of several brokers current with
// each other's writes. An invitation's commands land on any broker (a
// queue group), and a broker deciding from a revision another broker has
// replaced loses its compare-and-set and reads again — with two brokers,
// six reads more per accepted call than with one (docs/benchmarks.md).
// So each broker publishes every invitation and line it writes on
// GossipPrefix + its instance, and listens to each peer's subject (the
// outbox learns the peers from their watermarks). What it hears goes into
// its cache if newer than what it holds. The cache stays a hint: every
// write from it is a compare-and-set, and every refusal decided from it is
// confirmed with the stream leader, so a lost, late or forged gossip
// message costs a failed write and a read, never a wrong decision.
const GossipPrefix = "_RINGER.cache."

var invKeyPrefix, lineKeyPrefix = subjects.InvitationKey(""), subjects.LineKey("")

// gossip is a store's side of cache gossip.
type gossip struct {
	subject   string       // GossipPrefix + instance; "" when off
	listening atomic.Int32 // peers listened to: none, nothing is published
}

// Gossip makes the store publish what it writes on GossipPrefix +
// instance while it listens to at least one peer (ListenTo). Call it
// before the store is used. It does nothing without a cache.
func (s *Store) Gossip(instance string) {
	if s.cache != nil {
		s.gossip.subject = GossipPrefix + instance
	}
}

// ListenTo keeps in the cache what peer instance writes, until stop.
func (s *Store) ListenTo(peer string) (stop func(), err error) {
	if s.gossip.subject == "" {
		return func() {}, nil
	}
	sub, err := s.nc.Subscribe(GossipPrefix+peer, s.heard)
	if err != nil {
		return nil, err
	}
	_ = s.nc.FlushTimeout(time.Second) // listening from here on, as far as the server can tell
	s.gossip.listening.Add(1)
	var once atomic.Bool
	return func() {
		if once.CompareAndSwap(false, true) {
			s.gossip.listening.Add(-1)
			_ = sub.Unsubscribe()
		}
	}, nil
}

// tell publishes a write of key stored at rev (data: the value, nil for a
// delete) to the peers, best effort.
func (s *Store) tell(key string, rev uint64, data []byte) {
	if s.gossip.subject == "" || s.gossip.listening.Load() == 0 ||
		!strings.HasPrefix(key, invKeyPrefix) && !strings.HasPrefix(key, lineKeyPrefix) {
		return
	}
	_ = s.nc.PublishMsg(&nats.Msg{Subject: s.gossip.subject, Data: data,
		Header: nats.Header{gossipKey: []string{key}, gossipRev: []string{strconv.FormatUint(rev, 10)}}})
}

// The headers of a gossip message: the key written and its revision.
const (
	gossipKey = "Ringer-Key"
	gossipRev = "Ringer-Rev"
)

// gossipArmed is the Ringer-Key of a batch of timers a peer stored
// (ArmTimers): the body is the batch's, its Ringer-Rev the schedule's
// sequence. It is not a bucket key, so a broker from before it ignores it.
const gossipArmed = "timers.armed"

// tellArmed publishes to the peers that the timers of batch body data are
// stored (at sequence seq of a timer stream), best effort: a peer that
// relies on one of them (a later revision of its invitation, projected
// there) then need not store it again (KnownArmed).
func (s *Store) tellArmed(seq uint64, data []byte) {
	if s.gossip.subject == "" || s.gossip.listening.Load() == 0 {
		return
	}
	_ = s.nc.PublishMsg(&nats.Msg{Subject: s.gossip.subject, Data: data,
		Header: nats.Header{gossipKey: []string{gossipArmed}, gossipRev: []string{strconv.FormatUint(seq, 10)}}})
}

// heard keeps what a peer wrote in the cache; putInvitation and putLine
// keep it only if it is newer than what they hold.
func (s *Store) heard(m *nats.Msg) {
	key := m.Header.Get(gossipKey)
	rev, err := strconv.ParseUint(m.Header.Get(gossipRev), 10, 64)
	if err != nil || rev == 0 {
		return
	}
	switch {
	case key == gossipArmed:
		es, err := DecodeTimerBatch(m.Data)
		if err != nil {
			return
		}
		for _, e := range es {
			s.cache.armed(e.ID, e.At)
		}
	case strings.HasPrefix(key, invKeyPrefix):
		var r lifecycle.Record
		if len(m.Data) == 0 || msgpack.Unmarshal(m.Data, &r) != nil || r.ID != strings.TrimPrefix(key, invKeyPrefix) {
			return
		}
		r.Revision = rev
		s.cache.putInvitation(r)
	case strings.HasPrefix(key, lineKeyPrefix):
		var l Line // a delete: free, at the marker's revision
		if len(m.Data) > 0 && msgpack.Unmarshal(m.Data, &l) != nil {
			return
		}
		s.cache.putLine(strings.TrimPrefix(key, lineKeyPrefix), l, rev)
	}
}
