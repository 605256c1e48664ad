// Package store is Ringer's only state store: JetStream KV records written
// with single-key compare-and-set, TTL'd sessions and ADR-51 timer
// schedules. It knows the layout (docs/architecture.md, "KV layout") and
// asks package lifecycle every question about invitation semantics.
package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// Sentinel errors.
var (
	// ErrNotFound: the key has no value (never written, deleted or expired).
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: a compare-and-set lost; re-read and retry.
	ErrConflict = errors.New("store: revision conflict")
	// ErrFull: JetStream refused a write for lack of space: the bucket
	// reached its MaxBytes, or the server its max_file_store. Nothing was
	// written; retrying helps only once space is freed.
	ErrFull = errors.New("store: full")
)

// Line is a user's line record (line.<user>): the claims of the user's
// invitations and calls, and the manual busy flag. Claims are released
// lazily (docs/architecture.md, "Busy lines"): a claim keeps the user busy
// only while its invitation holds lines, so a terminal commit touches the
// invitation alone, and whoever next writes the line drops the claims that
// no longer hold (see Holding).
type Line struct {
	Claims []Claim `msgpack:"claims,omitempty"`
	Manual bool    `msgpack:"manual,omitempty"`
	// Push: the user has registered push targets, so the invitations sent
	// to the user look for them (lifecycle.Record.Push). Set by register,
	// cleared by the unregister of the last one; a flag outliving targets
	// that expired costs one empty read per invitation.
	Push bool `msgpack:"push,omitempty"`
	// Blocked are the callers the user refuses for good (block): their
	// invitations are refused as busy without ringing.
	Blocked []string `msgpack:"blocked,omitempty"`
}

// WithClaims returns l with claims c and its flags.
func (l Line) WithClaims(c []Claim) Line {
	l.Claims = c
	return l
}

// Claim is one invitation's hold on a line.
type Claim struct {
	ID string `msgpack:"id"`
	// At is when the claim was made (Unix ms, the claiming broker's clock).
	// A claim is written before its invitation; while the invitation is
	// missing the claim holds for a grace period, then counts as abandoned.
	At int64 `msgpack:"at"`
	// Peer is the invitation's other party, and Out whether the line's user
	// is its caller: a send that finds the callee mid-send to the caller
	// (a claim not written yet) resolves the glare with them.
	Peer string `msgpack:"peer,omitempty"`
	Out  bool   `msgpack:"out,omitempty"`
}

// String renders the claim for logs: id@at, then >peer for the line
// user's own call to peer, <peer for peer's call to the user.
func (c Claim) String() string {
	dir := "<"
	if c.Out {
		dir = ">"
	}
	return fmt.Sprintf("%s@%d%s%s", c.ID, c.At, dir, c.Peer)
}

// IDs returns the invitation ids the line's claims refer to.
func (l Line) IDs() []string {
	ids := make([]string, len(l.Claims))
	for i, c := range l.Claims {
		ids[i] = c.ID
	}
	return ids
}

// Store is a handle on the provisioned partitions (each a bucket and a timer
// stream). It is safe for concurrent use.
type Store struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	parts []*part
	// cache holds recent invitation and line records (nil: none).
	cache *cache
	// chains: invitation records carry their chain of steps (KeepChains).
	chains bool
	// stats counts every request this store makes to JetStream, for the
	// KV budget in docs/architecture.md.
	stats Stats
	// failing: when writes started failing without a success since (Unix
	// ns; 0: the last write went through). See WritesFailingFor.
	failing, lastFail atomic.Int64
	// writer and tracker: see TrackWrites.
	writer  string
	tracker WriteTracker
	// gossip: see Gossip.
	gossip gossip
	// batches: see AtomicBatches.
	batches bool
}

// part is one partition's handles.
type part struct {
	p      subjects.Partition
	kv     jetstream.KeyValue
	bucket jetstream.Stream
	// leader reads the bucket through the stream leader instead of direct
	// gets (which a follower may serve stale), for decisions a stale read
	// must not make (refusing a call as busy).
	leader jetstream.Stream
	timers jetstream.Stream
	// atomic: the bucket is replicated and takes atomic batches (false
	// once it refused one as disabled).
	atomic atomic.Bool
}

// partOf is the partition holding key.
func (s *Store) partOf(key string) *part {
	return s.parts[subjects.PartitionOf(key, len(s.parts))]
}

// Partitions is how many partitions the deployment was provisioned with.
func (s *Store) Partitions() int { return len(s.parts) }

// Option configures a Store.
type Option func(*Store)

// CacheSize keeps up to n invitation records and n line records in memory
// (LRU) so that commands can skip their reads; 0 disables the cache. A cached
// record only ever saves a read: see docs/architecture.md, "Record cache".
func CacheSize(n int) Option {
	return func(s *Store) { s.cache = newCache(n) }
}

// KeepChains makes every invitation record written carry the chain of
// its revisions (lifecycle.Step), which the export reads
// (docs/architecture.md, "Export"). Without it records are written
// without one, ~35 % shorter for an ended call: every write, its
// replication and its delivery to the projector carry less.
func KeepChains() Option {
	return func(s *Store) { s.chains = true }
}

// Open binds to every partition's bucket and timer stream, which Provision
// must have created; how many there are it reads from the layout marker.
func Open(ctx context.Context, nc *nats.Conn, opts ...Option) (*Store, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	n, err := Layout(ctx, js)
	if err != nil {
		return nil, err
	}
	s := &Store{nc: nc, js: js}
	for p := range subjects.Partition(n) {
		pt, err := bindPart(ctx, js, p)
		if err != nil {
			return nil, err
		}
		s.parts = append(s.parts, pt)
	}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

func bindPart(ctx context.Context, js jetstream.JetStream, p subjects.Partition) (*part, error) {
	kv, err := js.KeyValue(ctx, p.Bucket())
	if err != nil {
		return nil, fmt.Errorf("store: bind bucket %s: %w", p.Bucket(), err)
	}
	bucket, err := js.Stream(ctx, p.BucketStream())
	if err != nil {
		return nil, fmt.Errorf("store: bind stream %s: %w", p.BucketStream(), err)
	}
	leader, err := BindLeader(ctx, js, p.BucketStream())
	if err != nil {
		return nil, err
	}
	timers, err := js.Stream(ctx, p.TimerStream())
	if err != nil {
		return nil, fmt.Errorf("store: bind stream %s: %w", p.TimerStream(), err)
	}
	pt := &part{p: p, kv: kv, bucket: bucket, leader: leader, timers: timers}
	cfg := bucket.CachedInfo().Config
	pt.atomic.Store(cfg.Replicas > 1 && cfg.AllowAtomicPublish)
	return pt, nil
}

// JetStream returns the JetStream context the store uses (for consumers).
func (s *Store) JetStream() jetstream.JetStream { return s.js }

// Stats returns a snapshot of the store's round-trip counters.
func (s *Store) Stats() StatsSnapshot { return s.stats.snapshot() }

// GetInvitation reads an invitation record and its revision, with a direct
// get that a follower may serve. The record it returns may be stale, but its
// ErrNotFound is not: a follower catching up can lack a record that exists,
// so on a replicated bucket the leader confirms a "not found" (one more read,
// off the hot path: every caller holds an id that was given out).
func (s *Store) GetInvitation(ctx context.Context, id string) (lifecycle.Record, uint64, error) {
	r, rev, err := s.getInvitation(ctx, false, id)
	if errors.Is(err, ErrNotFound) && s.Replicated() {
		return s.getInvitation(ctx, true, id)
	}
	return r, rev, err
}

// GetInvitationFresh reads an invitation through the stream leader: never
// stale (a direct get may be served by a follower that is catching up, and
// say "not found" for a record it has not replicated yet).
func (s *Store) GetInvitationFresh(ctx context.Context, id string) (lifecycle.Record, uint64, error) {
	return s.getInvitation(ctx, true, id)
}

// Replicated reports whether the buckets have followers (whose direct gets
// may be stale).
func (s *Store) Replicated() bool { return s.parts[0].bucket.CachedInfo().Config.Replicas > 1 }

func (s *Store) getInvitation(ctx context.Context, fresh bool, id string) (lifecycle.Record, uint64, error) {
	var r lifecycle.Record
	data, rev, err := s.getFrom(ctx, fresh, subjects.InvitationKey(id))
	if err != nil {
		return r, rev, err
	}
	if err := msgpack.Unmarshal(data, &r); err != nil {
		return r, rev, fmt.Errorf("store: decode invitation %s: %w", id, err)
	}
	r.Revision = rev
	s.cache.putInvitation(r)
	return r, rev, nil
}

// CachedInvitation returns the cached record of invitation id, if any. It may
// be stale: write from it only with compare-and-set on its Revision, and
// confirm with a read before refusing on it. A record that no longer holds
// lines (lifecycle.HoldsLines) never will again, so that verdict is final.
func (s *Store) CachedInvitation(id string) (lifecycle.Record, bool) {
	return s.cache.invitation(id)
}

// CachedLine returns the cached line of user and its revision, if any; the
// same caveats as CachedInvitation apply.
func (s *Store) CachedLine(user string) (Line, uint64, bool) {
	return s.cache.line(user)
}

// Caching reports whether the store keeps a record cache.
func (s *Store) Caching() bool { return s.cache != nil }

// WriteFromCache reports whether a compare-and-set should start from cached
// values (CachedInvitation, CachedLine) rather than a read. It is false
// without a cache, and mostly false while too many such writes find the
// record moved on (several brokers sharing the commands of each
// invitation); report each such write with CacheOutcome.
func (s *Store) WriteFromCache() bool { return s.cache.forWrites() }

// CacheOutcome records whether a write started from cached values
// conflicted.
func (s *Store) CacheOutcome(conflict bool) { s.cache.outcome(conflict) }

// Observe shows the store an invitation revision committed elsewhere (the
// projector sees every one), keeping the cache current across brokers.
func (s *Store) Observe(r lifecycle.Record) { s.cache.putInvitation(r) }

// GetLine reads a user's line. A missing line is a free Line with ErrNotFound;
// rev is then the revision to expect when creating it (the delete marker's, or 0).
func (s *Store) GetLine(ctx context.Context, user string) (Line, uint64, error) {
	return s.getLine(ctx, false, user)
}

// GetLineFresh reads a line through the stream leader: never stale, slower.
// On a single server it is GetLine.
func (s *Store) GetLineFresh(ctx context.Context, user string) (Line, uint64, error) {
	return s.getLine(ctx, true, user)
}

func (s *Store) getLine(ctx context.Context, fresh bool, user string) (Line, uint64, error) {
	var l Line
	data, rev, err := s.getFrom(ctx, fresh, subjects.LineKey(user))
	if errors.Is(err, ErrNotFound) {
		s.cache.putLine(user, l, rev) // free, at the marker's revision (or 0)
	}
	if err != nil {
		return l, rev, err
	}
	if err := msgpack.Unmarshal(data, &l); err != nil {
		return l, rev, fmt.Errorf("store: decode line %s: %w", user, err)
	}
	s.cache.putLine(user, l, rev)
	return l, rev, nil
}

// get reads the last message of a key with a direct get. For a deleted or
// expired key it returns ErrNotFound and the marker's sequence, which a
// following create must expect.
func (s *Store) get(ctx context.Context, key string) ([]byte, uint64, error) {
	return s.getFrom(ctx, false, key)
}

// replicaWait bounds a direct get on a replicated bucket: past it (or on a
// 503) the read goes to the leader instead. Any replica answers a direct get,
// and one on a NATS node that hangs does not, while the others keep routing
// a share of the gets to it until they drop its routes (~3 s with the route
// liveness of deploy/nats/cluster.conf): without this bound those reads
// waited for the command's deadline.
const replicaWait = 500 * time.Millisecond

// GetLast reads the last message on subj from any replica (direct), or,
// when none answers within replicaWait (or one answers 503), from the
// stream's leader (leader: a handle without direct gets); fellBack says
// whether it had to.
func GetLast(ctx context.Context, direct, leader jetstream.Stream, subj string) (m *jetstream.RawStreamMsg, fellBack bool, err error) {
	rctx, cancel := context.WithTimeout(ctx, replicaWait)
	m, err = direct.GetLastMsgForSubject(rctx, subj)
	cancel()
	var apiErr *jetstream.APIError
	if ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.As(err, &apiErr) && apiErr.Code == 503) {
		m, err = leader.GetLastMsgForSubject(ctx, subj)
		return m, true, err
	}
	return m, false, err
}

// getFrom reads key's last message in its partition: through the stream
// leader when fresh (never stale), else with a direct get any replica may
// serve. On a single server every read is a direct get, authoritative.
func (s *Store) getFrom(ctx context.Context, fresh bool, key string) ([]byte, uint64, error) {
	s.stats.reads.Add(1)
	var (
		m   *jetstream.RawStreamMsg
		err error
	)
	pt := s.partOf(key)
	subj := pt.p.KVSubject(key)
	switch {
	case !s.Replicated():
		m, err = pt.bucket.GetLastMsgForSubject(ctx, subj)
	case fresh:
		m, err = pt.leader.GetLastMsgForSubject(ctx, subj)
	default:
		var fellBack bool
		m, fellBack, err = GetLast(ctx, pt.bucket, pt.leader, subj)
		if fellBack {
			s.stats.reads.Add(1)
		}
	}
	if err != nil {
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil, 0, ErrNotFound
		}
		return nil, 0, fmt.Errorf("store: get %s: %w", key, err)
	}
	if op := m.Header.Get("KV-Operation"); op != "" || m.Header.Get("Nats-Marker-Reason") != "" {
		return nil, m.Sequence, ErrNotFound
	}
	return m.Data, m.Sequence, nil
}

// Write is one compare-and-set write: a value (or a delete marker) for a
// key, valid only if the key's last revision is still ExpectRev (0 = absent).
type Write struct {
	Key       string
	Value     any // msgpack-encoded; ignored when Delete
	Delete    bool
	ExpectRev uint64
	// TTL, if set, makes JetStream remove the value (or the delete marker)
	// after this long; whole seconds.
	TTL time.Duration
	// lineOf names the user when this is a line write (for the cache).
	lineOf string
}

// WithTTL returns w with a TTL.
func (w Write) WithTTL(d time.Duration) Write { w.TTL = d; return w }

// PutInvitation is a Write of an invitation record over revision expect
// (0: a new record). Commit extends the record's chain of revisions
// (lifecycle.Record.Chained) if the store keeps chains (KeepChains).
func PutInvitation(r lifecycle.Record, expect uint64) Write {
	return Write{Key: subjects.InvitationKey(r.ID), Value: r, ExpectRev: expect}
}

// markerTTL is how long the delete marker of a freed line or an ended
// session stays, so that the bucket does not keep one per user forever.
const markerTTL = 10 * time.Minute

// PutLine is a Write of a user's line; a line with no claim, no flag and no
// blocked caller becomes a delete.
func PutLine(user string, l Line, expect uint64) Write {
	if len(l.Claims) == 0 && !l.Manual && !l.Push && len(l.Blocked) == 0 {
		return Write{Key: subjects.LineKey(user), Delete: true, ExpectRev: expect, TTL: markerTTL, lineOf: user}
	}
	return Write{Key: subjects.LineKey(user), Value: l, ExpectRev: expect, lineOf: user}
}

// Commit writes w with compare-and-set. It returns the new revision, or
// ErrConflict when the key's revision was no longer w.ExpectRev. Every
// transition is one key (docs/architecture.md); a send's claims and record
// may also go as one batch (CommitBatch).
func (s *Store) Commit(ctx context.Context, w Write) (uint64, error) {
	w, m, rec, done := s.message(w)
	var (
		rev    uint64
		pubErr error
		sent   []byte // a copy of what was sent, to resolve an unknown outcome
	)
	publish := func(data []byte) error { // data is only valid in here
		m.Data = data
		s.stats.writes.Add(1)
		rev, pubErr = s.publish(ctx, m)
		if pubErr != nil && done != nil {
			sent = bytes.Clone(data)
		}
		if pubErr == nil {
			s.tell(w.Key, rev, data)
		}
		return nil
	}
	if w.Delete {
		_ = publish(nil)
	} else if err := protocol.Encode(w.Value, publish); err != nil {
		s.settleWrite(done, w.Key, w.ExpectRev, rec, nil, 0, err)
		return 0, fmt.Errorf("store: encode %s: %w", w.Key, err)
	}
	if pubErr != nil {
		err := mapPubErr(pubErr, w.Key)
		s.settleWrite(done, w.Key, w.ExpectRev, rec, sent, 0, err)
		return 0, err
	}
	s.remember(w, rev)
	s.settleWrite(done, w.Key, w.ExpectRev, rec, nil, rev, nil)
	return rev, nil
}

// message prepares w's publish: the record's chain (KeepChains), the
// compare-and-set, TTL and delete headers, and, for an invitation record,
// the writer's header and the write's tracking (done; nil if untracked).
// It returns w as it will be written.
func (s *Store) message(w Write) (Write, *nats.Msg, lifecycle.Record, WriteDone) {
	if r, ok := w.Value.(lifecycle.Record); ok {
		if s.chains {
			r.Chain = r.Chained(w.ExpectRev, time.Now().UnixMilli())
		} else {
			r.Chain = nil // kept by a record written while the export was on
		}
		w.Value = r
	}
	m := nats.NewMsg(s.kvSubject(w.Key))
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(w.ExpectRev, 10))
	if w.TTL > 0 {
		m.Header.Set(jetstream.MsgTTLHeader, ttlHeader(w.TTL))
	}
	if w.Delete {
		m.Header.Set("KV-Operation", "DEL")
	}
	rec, tracked := w.Value.(lifecycle.Record)
	var done WriteDone
	if tracked && !w.Delete {
		m.Header.Set(HeaderWriter, s.writer)
		done = s.trackWrite(w.Key)
	}
	return w, m, rec, done
}

// kvSubject is the stream subject of key in its partition.
func (s *Store) kvSubject(key string) string { return s.partOf(key).p.KVSubject(key) }

// WritesFailing reports for how long every write has failed (no answer,
// no stream leader reachable) and how long ago the last one did; 0, 0 if
// the last write was answered (stored, or refused by the stream: a
// conflict, a full store).
func (s *Store) WritesFailing() (failingFor, sinceLast time.Duration) {
	first, last := s.failing.Load(), s.lastFail.Load()
	if first == 0 {
		return 0, 0
	}
	return time.Since(time.Unix(0, first)), time.Since(time.Unix(0, last))
}

// remember caches what a successful write wrote.
func (s *Store) remember(w Write, rev uint64) {
	switch v := w.Value.(type) {
	case lifecycle.Record:
		v.Revision = rev
		s.cache.putInvitation(v)
	case Line:
		s.cache.putLine(w.lineOf, v, rev)
	case nil:
		if w.lineOf != "" { // a freed line: deleted
			s.cache.putLine(w.lineOf, Line{}, rev)
		}
	}
}

func mapPubErr(err error, what string) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch {
		case isFull(apiErr):
			return fmt.Errorf("%w: %s: %s (%d)", ErrFull, what, apiErr.Description, apiErr.ErrorCode)
		case IsWrongLastSequence(err):
			return fmt.Errorf("%w: %s: %s", ErrConflict, what, apiErr.Description)
		}
	}
	return fmt.Errorf("store: publish %s: %w", what, err)
}

// IsWrongLastSequence reports whether err is a stream refusing a write for
// a wrong expected last sequence, i.e. a compare-and-set that lost (10164:
// the R>1 wording of the same check).
func IsWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == 10164)
}

// isFull reports whether JetStream refused a write for lack of space.
func isFull(e *jetstream.APIError) bool {
	switch e.ErrorCode {
	case 10023, 10047: // insufficient (storage) resources: the server's limits
		return true
	case 10077: // storing failed: the stream's own limits (KV buckets discard new)
		d := e.Description
		return strings.Contains(d, "maximum bytes") || strings.Contains(d, "maximum messages") || strings.Contains(d, "resource limits")
	}
	return false
}

// PutSession records a live session of user on device that expires after
// ttl unless refreshed, and returns its revision. ttl is rounded up to
// whole seconds (JetStream's TTL granularity).
func (s *Store) PutSession(ctx context.Context, user, device string, ttl time.Duration) (uint64, error) {
	return s.putExpiringAt(ctx, subjects.SessionKey(user, device), nil, ttl, "session", nil)
}

// RefreshSession is PutSession for a session this store knows at revision
// rev, in one write with compare-and-set: ErrConflict, and nothing
// written, if the key was written since — the session ended (its TTL or
// delete marker) or was written again (a login, a refresh whose answer was
// lost). The caller then decides by reading whether the session is live.
// A session that ended is never brought back by a refresh.
func (s *Store) RefreshSession(ctx context.Context, user, device string, ttl time.Duration, rev uint64) (uint64, error) {
	if rev == 0 {
		return 0, fmt.Errorf("%w: session %s/%s: no revision to refresh", ErrConflict, user, device)
	}
	return s.putExpiringAt(ctx, subjects.SessionKey(user, device), nil, ttl, "session", &rev)
}

// DeleteSession removes a session (logout).
func (s *Store) DeleteSession(ctx context.Context, user, device string) error {
	return s.deleteKey(ctx, subjects.SessionKey(user, device), "session delete")
}

// putExpiring writes data under key (no compare-and-set) for ttl.
func (s *Store) putExpiring(ctx context.Context, key string, data []byte, ttl time.Duration, what string) error {
	_, err := s.putExpiringAt(ctx, key, data, ttl, what, nil)
	return err
}

// putExpiringAt writes data under key for ttl, with compare-and-set on
// *expect if it is not nil, and returns the key's new revision.
func (s *Store) putExpiringAt(ctx context.Context, key string, data []byte, ttl time.Duration, what string, expect *uint64) (uint64, error) {
	m := nats.NewMsg(s.kvSubject(key))
	m.Header.Set(jetstream.MsgTTLHeader, ttlHeader(ttl))
	if expect != nil {
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(*expect, 10))
	}
	m.Data = data
	s.stats.writes.Add(1)
	rev, err := s.publish(ctx, m)
	if err != nil {
		return 0, mapPubErr(err, what)
	}
	return rev, nil
}

// deleteKey writes key's delete marker, which itself expires after markerTTL.
func (s *Store) deleteKey(ctx context.Context, key, what string) error {
	m := nats.NewMsg(s.kvSubject(key))
	m.Header.Set("KV-Operation", "DEL")
	m.Header.Set(jetstream.MsgTTLHeader, ttlHeader(markerTTL))
	s.stats.writes.Add(1)
	if _, err := s.publish(ctx, m); err != nil {
		return mapPubErr(err, what)
	}
	return nil
}

// ttlHeader formats a Nats-TTL value: whole seconds, rounded up, at least 1.
func ttlHeader(d time.Duration) string {
	secs := max(int64((d+time.Second-1)/time.Second), 1)
	return strconv.FormatInt(secs, 10) + "s"
}

// HasSession reports whether user has a live session on device.
func (s *Store) HasSession(ctx context.Context, user, device string) (bool, error) {
	_, _, err := s.get(ctx, subjects.SessionKey(user, device))
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// HasSessionFresh is HasSession through the stream leader.
func (s *Store) HasSessionFresh(ctx context.Context, user, device string) (bool, error) {
	_, _, err := s.getFrom(ctx, true, subjects.SessionKey(user, device))
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// ArmTimer arms a durable timer that fires invitation id at Unix millisecond
// at. Arming the same (id, at) twice is harmless; the fired message carries at.
func (s *Store) ArmTimer(ctx context.Context, id string, at int64) error {
	p := s.partOf(subjects.InvitationKey(id)).p // the invitation's partition
	m := nats.NewMsg(p.TimerSchedule(id, at))
	// nats.go's WithScheduleAt truncates to whole seconds; write RFC3339Nano.
	m.Header.Set("Nats-Schedule", "@at "+time.UnixMilli(at).UTC().Format(time.RFC3339Nano))
	m.Header.Set("Nats-Schedule-Target", p.TimerFire(id))
	m.Data = strconv.AppendInt(nil, at, 10)
	s.stats.timers.Add(1)
	if _, err := s.publish(ctx, m); err != nil {
		return fmt.Errorf("store: arm timer %s: %w", id, err)
	}
	s.cache.armed(id, at)
	return nil
}

// TimerArmed reports whether the schedule of invitation id's timer at at
// is in the timer stream (armed, not fired yet). A timer known armed
// (KnownArmed) is; any other costs a direct get, which a lagging replica
// may answer "no" to — callers then arm it again, which is harmless.
func (s *Store) TimerArmed(ctx context.Context, id string, at int64) (bool, error) {
	if s.cache.knownArmed(id, at) {
		return true, nil
	}
	pt := s.partOf(subjects.InvitationKey(id))
	s.stats.reads.Add(1)
	_, err := pt.timers.GetLastMsgForSubject(ctx, pt.p.TimerSchedule(id, at))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: timer of %s: %w", id, err)
	}
	return true, nil
}

// KnownArmed reports whether invitation id's timer at at is known to be
// stored, without a look-up: this store armed it, or a peer's cache gossip
// said it armed it in a batch (ArmTimers), and the record cache still
// remembers. Like every gossip it is trusted as a hint whose loss or
// forgery costs a stored timer or, at worst, a timer missing until a
// party's read settles the overdue invitation (docs/architecture.md).
func (s *Store) KnownArmed(id string, at int64) bool { return s.cache.knownArmed(id, at) }

// NewIDFor returns a fresh invitation id whose record lives in the
// partition of user's line, so that a send's record and its caller's claim
// can go in one batch (Batches) and a call writes to fewer partitions
// (subjects.LocalInvitationID: P draws on average, each a few tens of
// nanoseconds).
func (s *Store) NewIDFor(user string) string {
	return subjects.LocalInvitationID(user, len(s.parts), nuid.Next)
}

// PendingTimers counts messages in the timer streams: armed schedules plus
// fired timers not yet handled.
func (s *Store) PendingTimers(ctx context.Context) (uint64, error) {
	var n uint64
	for _, pt := range s.parts {
		info, err := pt.timers.Info(ctx)
		if err != nil {
			return 0, err
		}
		n += info.State.Msgs
	}
	return n, nil
}

// Transient reports whether err is JetStream being briefly unreachable or
// unable to answer (a leader election, a node restarting, a timeout): the
// operation did nothing, or nothing certain, and may be retried.
func Transient(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrConnectionClosed) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, ErrConflict) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// 503: JetStream temporarily unavailable (no leader yet).
		return apiErr.Code == 503
	}
	return false
}
