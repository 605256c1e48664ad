// Baseline: the raw NATS request-reply and JetStream KV create/update ceilings, measured in the same run.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// baselineResult is what --baseline measured.
type baselineResult struct {
	RequestReplyPerS float64 `json:"request_reply_per_s"`
	KVCreatePerS     float64 `json:"kv_create_per_s"`
	KVUpdatePerS     float64 `json:"kv_update_per_s"`
	// KVBatch3PerS: atomic batches (Nats-Batch-*) of three KV creates per
	// second — what a Ringer send cost before claims were released lazily
	// (docs/architecture.md); kept to show what a multi-key commit costs on
	// the server under test.
	KVBatch3PerS float64 `json:"kv_batch3_per_s"`
	// LifecycleFloorPerS: the fewest NATS operations one accepted call of
	// Ringer's protocol needs, done by raw NATS with no Ringer code, per
	// second (see lifecycleFloor). No implementation of the protocol can
	// complete accepted calls faster than this on the server under test.
	LifecycleFloorPerS float64 `json:"lifecycle_floor_per_s"`
	Concurrency        int     `json:"concurrency"`
	DurationS          float64 `json:"duration_s"` // of each measurement
	Replicas           int     `json:"replicas"`
	Errors             int64   `json:"errors"`
	Error              string  `json:"error,omitempty"` // why a measurement could not run
}

// payload sizes close to Ringer's: a request, and an invitation record.
var (
	rrPayload = []byte(strings.Repeat("r", 64))
	rrReply   = []byte(strings.Repeat("v", 256))
	kvPayload = []byte(strings.Repeat("k", 320))
)

// runBaseline measures, for d each and with conc workers over the shared
// connections: core request-reply against one responder subscription (what
// a broker's command subscription is), KV create of fresh keys (what a send
// commits), and KV update of a key per worker (what a transition commits).
// The scratch subject is unique to the run and the scratch bucket is
// deleted afterwards.
func runBaseline(ctx context.Context, conns []*nats.Conn, runID string, conc int, d time.Duration, replicas int) *baselineResult {
	res := &baselineResult{Concurrency: conc, DurationS: d.Seconds(), Replicas: replicas}
	var errs atomic.Int64
	var failures []string

	// Request-reply: the responder has its own subscription on the first
	// connection and answers inline.
	subj := "loadgen.baseline." + runID
	sub, err := conns[0].Subscribe(subj, func(m *nats.Msg) { _ = m.Respond(rrReply) })
	if err == nil {
		err = conns[0].Flush()
	}
	if err == nil { // a probe: permissions are checked asynchronously
		_, err = conns[len(conns)-1].Request(subj, rrPayload, 2*time.Second)
		if err != nil {
			err = fmt.Errorf("%w (may these credentials publish and subscribe %s? see --baseline-nats)", err, subj)
		}
	}
	if err != nil {
		failures = append(failures, "request-reply: "+err.Error())
	} else {
		n := hammer(conc, d, func(w int, _ int64) error {
			_, err := conns[w%len(conns)].Request(subj, rrPayload, 2*time.Second)
			return err
		}, &errs)
		res.RequestReplyPerS = float64(n) / d.Seconds()
	}
	if sub != nil {
		_ = sub.Unsubscribe()
	}

	js, err := jetstream.New(conns[0])
	if err != nil {
		failures = append(failures, "jetstream: "+err.Error())
		res.Error = strings.Join(failures, "; ")
		return res
	}
	bucket := "LOADGEN_BASELINE_" + strings.ToUpper(runID)
	kvs := make([]jetstream.KeyValue, len(conns))
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	kvs[0], err = js.CreateKeyValue(cctx, jetstream.KeyValueConfig{Bucket: bucket, History: 1, Storage: jetstream.FileStorage, Replicas: replicas})
	cancel()
	if err != nil {
		failures = append(failures, "kv: "+err.Error())
		res.Error = strings.Join(failures, "; ")
		return res
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = js.DeleteKeyValue(dctx, bucket)
	}()
	for i := 1; i < len(conns); i++ {
		j, err := jetstream.New(conns[i])
		if err == nil {
			bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			kvs[i], err = j.KeyValue(bctx, bucket)
			cancel()
		}
		if err != nil {
			kvs[i] = kvs[0]
		}
	}
	kvOf := func(w int) jetstream.KeyValue { return kvs[w%len(kvs)] }

	n := hammer(conc, d, func(w int, i int64) error {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := kvOf(w).Create(c, fmt.Sprintf("c%d_%d", w, i), kvPayload)
		return err
	}, &errs)
	res.KVCreatePerS = float64(n) / d.Seconds()

	revs := make([]uint64, conc)
	var mu sync.Mutex
	n = hammer(conc, d, func(w int, _ int64) error {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		key := fmt.Sprintf("u%d", w)
		mu.Lock()
		rev := revs[w]
		mu.Unlock()
		var err error
		if rev == 0 {
			rev, err = kvOf(w).Create(c, key, kvPayload)
		} else {
			rev, err = kvOf(w).Update(c, key, kvPayload, rev)
		}
		if err == nil {
			mu.Lock()
			revs[w] = rev
			mu.Unlock()
		}
		return err
	}, &errs)
	res.KVUpdatePerS = float64(n) / d.Seconds()

	if rate, err := lifecycleFloor(ctx, conns, kvOf, subj, conc, d, &errs); err != nil {
		failures = append(failures, "lifecycle floor: "+err.Error())
	} else {
		res.LifecycleFloorPerS = rate
	}

	if rate, err := batchRate(ctx, js, conns, bucket, conc, d, &errs); err != nil {
		failures = append(failures, "atomic batch: "+err.Error())
	} else {
		res.KVBatch3PerS = rate
	}
	res.Errors = errs.Load()
	if len(failures) > 0 {
		res.Error = strings.Join(failures, "; ")
	}
	return res
}

// lifecycleFloor measures how many accepted calls per second the server
// under test can carry when each costs only what Ringer's protocol cannot do
// without (SPEC §2 and §5): five party commands (send, ack, accept,
// ack-accept, hangup), each a core request/reply whose responder commits
// one KV write (a create, then four compare-and-set updates of that key:
// one durable record per state) and publishes one event to the other party
// (ring, ReceivedByPeer, Accepted, Accepted, call ended) before replying.
// It leaves out everything else Ringer does: the two line claims, timers,
// reads, msgpack, the state machine, presence and the SDK. The responders
// are conc queue subscribers, so the server sees as much parallelism as in
// the other measurements.
func lifecycleFloor(ctx context.Context, conns []*nats.Conn, kvOf func(int) jetstream.KeyValue, subj string, conc int, d time.Duration, errs *atomic.Int64) (float64, error) {
	cmd, events := subj+".floor", subj+".floor.events"
	evSub, err := conns[len(conns)-1].Subscribe(events, func(*nats.Msg) {})
	if err != nil {
		return 0, err
	}
	defer func() { _ = evSub.Unsubscribe() }()
	for w := 0; w < conc; w++ {
		nc := conns[w%len(conns)]
		sub, err := nc.QueueSubscribe(cmd, "floor", func(m *nats.Msg) {
			key, revText, _ := strings.Cut(string(m.Data), " ")
			c, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			var (
				rev uint64
				err error
			)
			if revText == "0" {
				rev, err = kvOf(w).Create(c, key, kvPayload)
			} else if prev, perr := strconv.ParseUint(revText, 10, 64); perr != nil {
				err = perr
			} else {
				rev, err = kvOf(w).Update(c, key, kvPayload, prev)
			}
			if err != nil {
				_ = m.Respond([]byte("error " + err.Error()))
				return
			}
			_ = nc.Publish(events, rrReply)
			_ = m.Respond(strconv.AppendUint(nil, rev, 10))
		})
		if err != nil {
			return 0, err
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	for _, nc := range conns {
		if err := nc.Flush(); err != nil {
			return 0, err
		}
	}
	n := hammer(conc, d, func(w int, i int64) error {
		key, rev := fmt.Sprintf("f%d_%d", w, i), []byte("0")
		for step := 0; step < 5; step++ {
			rep, err := conns[w%len(conns)].Request(cmd, append([]byte(key+" "), rev...), 2*time.Second)
			if err != nil {
				return err
			}
			if bytes.HasPrefix(rep.Data, []byte("error ")) {
				return errors.New(string(rep.Data))
			}
			rev = rep.Data
		}
		return nil
	}, errs)
	return float64(n) / d.Seconds(), nil
}

// batchRate enables atomic publish on the scratch bucket's stream and
// measures atomic batches of three KV creates (see Baseline.KVBatch3PerS).
func batchRate(ctx context.Context, js jetstream.JetStream, conns []*nats.Conn, bucket string, conc int, d time.Duration, errs *atomic.Int64) (float64, error) {
	uctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := js.Stream(uctx, "KV_"+bucket)
	if err != nil {
		return 0, err
	}
	sc := st.CachedInfo().Config
	sc.AllowAtomicPublish = true
	if _, err := js.UpdateStream(uctx, sc); err != nil {
		return 0, err
	}
	jss := make([]jetstream.JetStream, len(conns))
	for i, nc := range conns {
		if jss[i], err = jetstream.New(nc); err != nil {
			return 0, err
		}
	}
	n := hammer(conc, d, func(w int, i int64) error {
		nc, j := conns[w%len(conns)], jss[w%len(jss)]
		id := fmt.Sprintf("b%d_%d", w, i)
		for k := 1; k <= 3; k++ {
			m := nats.NewMsg(fmt.Sprintf("$KV.%s.%s_%d", bucket, id, k))
			m.Data = kvPayload
			m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
			m.Header.Set("Nats-Batch-Id", id)
			m.Header.Set("Nats-Batch-Sequence", fmt.Sprint(k))
			if k < 3 {
				if err := nc.PublishMsg(m); err != nil {
					return err
				}
				continue
			}
			m.Header.Set("Nats-Batch-Commit", "1")
			c, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := j.PublishMsg(c, m)
			cancel()
			return err
		}
		return nil
	}, errs)
	return float64(n) / d.Seconds(), nil
}

// hammer runs op on conc workers for d and returns how many succeeded.
func hammer(conc int, d time.Duration, op func(worker int, i int64) error, errs *atomic.Int64) int64 {
	var ok atomic.Int64
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int64(0); time.Now().Before(end); i++ {
				if err := op(w, i); err != nil {
					errs.Add(1)
					if errors.Is(err, nats.ErrConnectionClosed) {
						return
					}
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	return ok.Load()
}
