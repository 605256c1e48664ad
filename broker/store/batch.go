package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/protocol"
)

// ErrBatchRefused: JetStream turned an atomic batch away before storing
// any of it (too many batches in flight on the stream, a batch message lost
// on the way, atomic publish disabled). Nothing was written; the same
// writes may go one by one.
var ErrBatchRefused = errors.New("store: atomic batch refused")

// The headers of an atomic batch (ADR-50).
const (
	headerBatchID     = "Nats-Batch-Id"
	headerBatchSeq    = "Nats-Batch-Sequence"
	headerBatchCommit = "Nats-Batch-Commit"
)

// AtomicBatches lets a replicated store write several keys of one
// partition as one atomic batch (CommitBatch): one Raft proposal instead
// of one per key. On one server a batch is staged on disk and slower than
// separate writes, so an unreplicated store never batches.
func AtomicBatches() Option {
	return func(s *Store) { s.batches = true }
}

// Batches reports whether writes of keys can go as one CommitBatch: the
// store batches (AtomicBatches, replicated, the buckets provisioned with
// atomic publish allowed) and every key is in one partition.
func (s *Store) Batches(keys ...string) bool {
	if !s.batches || len(keys) == 0 {
		return false
	}
	pt := s.partOf(keys[0])
	if !pt.atomic.Load() {
		return false
	}
	for _, k := range keys[1:] {
		if s.partOf(k) != pt {
			return false
		}
	}
	return true
}

// CommitBatch writes ws, each with compare-and-set, as one atomic batch
// (ADR-50): JetStream checks every write's expected revision at the commit
// and stores all of them or none, in order, as one Raft proposal. It
// returns their new revisions. ErrConflict: a key was no longer at its
// expected revision, and nothing was stored. ErrBatchRefused: the batch was
// turned away unstored. Any other error leaves the outcome unknown, as for
// Commit: all or nothing, so an invitation record among ws (at most one;
// it is tracked like Commit's) tells the fate of the whole batch. The keys
// must satisfy Batches.
func (s *Store) CommitBatch(ctx context.Context, ws []Write) ([]uint64, error) {
	if len(ws) == 0 || !s.Batches(keys(ws)...) {
		return nil, fmt.Errorf("store: %d writes cannot go as one batch", len(ws))
	}
	var (
		id    = nuid.Next()
		msgs  = make([]*nats.Msg, len(ws))
		datas = make([][]byte, len(ws)) // what each message carries, kept for the cache and the gossip
		rec   = -1                      // the tracked record's index in ws
		done  WriteDone
	)
	ws = append([]Write(nil), ws...)
	for i := range ws {
		var d WriteDone
		ws[i], msgs[i], _, d = s.message(ws[i])
		if d != nil {
			if done != nil {
				return nil, fmt.Errorf("store: a batch holds one invitation record at most")
			}
			rec, done = i, d
		}
		if !ws[i].Delete {
			if err := protocol.Encode(ws[i].Value, func(data []byte) error {
				datas[i] = append([]byte(nil), data...)
				return nil
			}); err != nil {
				err = fmt.Errorf("store: encode %s: %w", ws[i].Key, err)
				if done != nil {
					s.settleBatch(done, ws, rec, nil, 0, err)
				}
				return nil, err
			}
		}
		m := msgs[i]
		m.Data = datas[i]
		m.Header.Set(headerBatchID, id)
		m.Header.Set(headerBatchSeq, strconv.Itoa(i+1))
	}
	s.stats.writes.Add(1) // one round trip
	last := len(ws) - 1
	for _, m := range msgs[:last] {
		// No reply: JetStream answers only the commit.
		if err := s.nc.PublishMsg(m); err != nil {
			s.settleBatch(done, ws, rec, nil, 0, err)
			return nil, fmt.Errorf("%w: %s: %w", ErrBatchRefused, ws[0].Key, err)
		}
	}
	msgs[last].Header.Set(headerBatchCommit, "1")
	seq, err := s.publish(ctx, msgs[last])
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == codeAtomicDisabled {
			s.partOf(ws[0].Key).atomic.Store(false) // an operator switched it off: stop trying
		}
		err = mapBatchErr(err, ws[last].Key)
		s.settleBatch(done, ws, rec, datas, 0, err)
		return nil, err
	}
	// A batch is stored in order at consecutive sequences, ending at the
	// commit's.
	revs := make([]uint64, len(ws))
	for i, w := range ws {
		revs[i] = seq - uint64(last-i)
		s.tell(w.Key, revs[i], datas[i])
		s.remember(w, revs[i])
	}
	s.settleBatch(done, ws, rec, nil, seq, nil)
	return revs, nil
}

// settleBatch tells done (nil: nothing tracked) the outcome of the batch's
// record ws[rec]: stored at the batch's last sequence plus rec's offset
// from it, or err (see settleWrite), with the data sent for an unknown
// outcome.
func (s *Store) settleBatch(done WriteDone, ws []Write, rec int, datas [][]byte, seq uint64, err error) {
	if done == nil {
		return
	}
	r, _ := ws[rec].Value.(lifecycle.Record)
	var sent []byte
	if datas != nil {
		sent = datas[rec]
	}
	if err == nil {
		seq -= uint64(len(ws) - 1 - rec)
	}
	if errors.Is(err, ErrBatchRefused) {
		sent = nil // certainly not stored
	}
	s.settleWrite(done, ws[rec].Key, ws[rec].ExpectRev, r, sent, seq, err)
}

// codeAtomicDisabled: the stream does not allow atomic batches.
const codeAtomicDisabled = 10174

// mapBatchErr is mapPubErr for a batch's commit: the refusals that store
// nothing become ErrBatchRefused.
func mapBatchErr(err error, what string) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case codeAtomicDisabled,
			10175, // batch sequence missing
			10176, // incomplete batch (a message lost, or the batch abandoned)
			10179, // invalid batch id
			10199, // too large
			10200, // invalid commit
			10210: // too many batches in flight
			return fmt.Errorf("%w: %s: %s (%d)", ErrBatchRefused, what, apiErr.Description, apiErr.ErrorCode)
		}
	}
	return mapPubErr(err, what)
}

// keys returns the keys ws write.
func keys(ws []Write) []string {
	ks := make([]string, len(ws))
	for i, w := range ws {
		ks[i] = w.Key
	}
	return ks
}
