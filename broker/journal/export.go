package journal

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// The export: every committed transition of every invitation, once, in
// revision order, on the invitation's own subject of RINGER_EXPORT, for app
// backends that speak NATS (docs/protocol.md, "Export").
//
// The projector exports; it sees a key's newest revision, not necessarily
// every one (the bucket keeps one per key), but each record carries the
// steps of all its revisions (lifecycle.Step), and an invitation's last
// revision is never superseded. So whichever revision the projector handles,
// it appends every step the subject lacks, each publish a compare-and-set
// on the subject's last sequence: two brokers exporting one invitation at
// once, or a redelivery after a crash, never write a step twice or out of
// order, however long after.

// revisionHeader carries an exported transition's revision, so that the
// next export reads it without decoding the body.
const revisionHeader = "Ringer-Revision"

// ProvisionExport creates or updates the export stream; retention is how
// long a transition stays.
func ProvisionExport(ctx context.Context, js jetstream.JetStream, replicas int, retention time.Duration) error {
	if replicas <= 0 {
		replicas = 1
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        subjects.ExportStream,
		Description: "Ringer export: every transition of every invitation, one subject per invitation",
		Subjects:    []string{subjects.ExportSubjects()},
		MaxAge:      retention,
		Discard:     jetstream.DiscardOld,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		Duplicates:  dedupeWindow,
		AllowDirect: true,
	}); err != nil {
		return fmt.Errorf("journal: provision %s: %w", subjects.ExportStream, err)
	}
	return nil
}

// BindExport binds the journal to the export stream (ProvisionExport must
// have created it): one handle whose reads any replica answers, one for the
// stream leader.
func (j *Journal) BindExport(ctx context.Context) error {
	direct, err := j.js.Stream(ctx, subjects.ExportStream)
	if err != nil {
		return fmt.Errorf("journal: bind %s: %w", subjects.ExportStream, err)
	}
	leader, err := store.BindLeader(ctx, j.js, subjects.ExportStream)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	j.export, j.exportLeader = direct, leader
	return nil
}

// maxExportTries bounds the compare-and-set retries of one export.
const maxExportTries = 8

// Export appends to rec's export subject every non-quiet step it lacks.
func (j *Journal) Export(ctx context.Context, rec *lifecycle.Record) error {
	subj := subjects.Export(rec.ID)
	steps := rec.Steps()
	for try := 0; try < maxExportTries; try++ {
		lastRev, lastSeq, err := j.lastExported(ctx, subj, try > 0)
		if err != nil {
			return err
		}
		prev, conflict := uint64(0), false
		for _, st := range steps {
			if st.Quiet {
				continue
			}
			if st.Rev <= lastRev {
				prev = st.Rev
				continue
			}
			seq, err := j.publishStep(ctx, subj, rec, st, prev, lastSeq)
			if store.IsWrongLastSequence(err) {
				conflict = true // someone else exported meanwhile: look again
				break
			}
			if err != nil {
				return err
			}
			prev, lastRev, lastSeq = st.Rev, st.Rev, seq
		}
		if !conflict {
			return nil
		}
	}
	return fmt.Errorf("journal: export %s: the subject kept moving", rec.ID)
}

// lastExported reads the revision and stream sequence of the last message on
// subj (0, 0 if none). fresh asks the stream leader (after a conflict: a
// replica's direct get may lag).
func (j *Journal) lastExported(ctx context.Context, subj string, fresh bool) (rev, seq uint64, err error) {
	if j.export == nil {
		return 0, 0, errors.New("journal: export stream not bound")
	}
	var m *jetstream.RawStreamMsg
	if fresh {
		m, err = j.exportLeader.GetLastMsgForSubject(ctx, subj)
	} else {
		// Any replica, but not one on a node that hangs (store.GetLast).
		m, _, err = store.GetLast(ctx, j.export, j.exportLeader, subj)
	}
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("journal: last export %s: %w", subj, err)
	}
	rev, _ = strconv.ParseUint(m.Header.Get(revisionHeader), 10, 64)
	return rev, m.Sequence, nil
}

// publishStep appends one transition, if subj's last message is still lastSeq.
func (j *Journal) publishStep(ctx context.Context, subj string, rec *lifecycle.Record, st lifecycle.Step, prev, lastSeq uint64) (uint64, error) {
	t := protocol.Transition{V: protocol.ExportVersion, ID: rec.ID, Revision: st.Rev, Previous: prev,
		State: st.State, CallState: st.CallState, Reason: st.Reason, At: st.At,
		Caller: rec.Caller, CallerDevice: rec.CallerDevice, Callee: rec.Callee, CalleeDevice: rec.CalleeDevice, ChannelID: rec.ChannelID}
	var seq uint64
	err := protocol.Encode(&t, func(data []byte) error {
		m := nats.NewMsg(subj)
		m.Data = data
		m.Header.Set(revisionHeader, strconv.FormatUint(st.Rev, 10))
		ack, err := j.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(lastSeq),
			jetstream.WithMsgID(rec.ID+"."+strconv.FormatUint(st.Rev, 10)))
		if err == nil {
			seq = ack.Sequence
		}
		return err
	})
	return seq, err
}

// Exported reads the transitions exported for invitation id, oldest first,
// with one batched direct get (at most maxExported).
func (j *Journal) Exported(ctx context.Context, id string) ([]protocol.Transition, error) {
	req := store.DirectRequest{NextBySubj: subjects.Export(id), Batch: maxExported, MaxBytes: 4 << 20}
	var out []protocol.Transition
	_, err := store.DirectBatch(ctx, j.nc, j.js, subjects.ExportStream, req, func(m *nats.Msg) error {
		var t protocol.Transition
		if err := msgpack.Unmarshal(m.Data, &t); err != nil {
			return fmt.Errorf("undecodable transition: %w", err)
		}
		out = append(out, t)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("journal: export of %s: %w", id, err)
	}
	return out, nil
}

// maxExported bounds Exported: far more transitions than an invitation has.
const maxExported = 1000
