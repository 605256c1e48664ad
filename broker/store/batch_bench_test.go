package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/internal/natstest"
)

// BenchmarkSendWrites weighs the three replicated writes a send makes (its
// two line claims side by side, then the invitation record, each a
// compare-and-set on its key) against the same three as one atomic batch
// (ADR-50, nats-server ≥ 2.12: one commit, every message's
// Nats-Expected-Last-Subject-Sequence checked at the commit, all or
// nothing), on a three-node R3 cluster: the question behind issue 16's
// "fewer replicated writes per call" (docs/benchmarks.md, "Atomic
// batches"). A batch needs its keys in one stream, so with partitions it
// applies only to a send whose three keys share one. Each op writes three
// new keys; ns/op is wall time per op at 64 in flight, so ops/s is what the
// cluster sustains.
func BenchmarkSendWrites(b *testing.B) {
	c := natstest.RunCluster(b, 3)
	nc := natstest.Connect(b, c.URLs())
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	natstest.Attempt(b, 30*time.Second, 10*time.Second, func(ctx context.Context) error {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name: "SENDS", Subjects: []string{"sends.>"}, Replicas: 3, Storage: jetstream.FileStorage,
			AllowAtomicPublish: true, AllowDirect: true,
		})
		return err
	})
	var next atomic.Int64
	key := func(op int64, k string) string { return "sends." + strconv.FormatInt(op, 10) + "." + k }
	cas := func(ctx context.Context, subj string) error {
		m := nats.NewMsg(subj)
		m.Data = make([]byte, 200) // about a record's size
		_, err := js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(0))
		return err
	}
	run := func(b *testing.B, op func(ctx context.Context, n int64) error) {
		b.SetParallelism(32) // 64 in flight on 2 cores
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				// Each op its own deadline: one shared by the whole run
				// would end a long -benchtime.
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := op(ctx, next.Add(1))
				cancel()
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
	}

	b.Run("separate", func(b *testing.B) {
		run(b, func(ctx context.Context, n int64) error {
			var wg sync.WaitGroup
			var errs [2]error
			for i, k := range []string{"caller", "callee"} {
				wg.Go(func() { errs[i] = cas(ctx, key(n, k)) })
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					return err
				}
			}
			return cas(ctx, key(n, "inv"))
		})
	})

	b.Run("atomic_batch", func(b *testing.B) {
		run(b, func(ctx context.Context, n int64) error {
			id := "s" + strconv.FormatInt(n, 10)
			keys := []string{"caller", "callee", "inv"}
			for i, k := range keys {
				m := nats.NewMsg(key(n, k))
				m.Data = make([]byte, 200)
				m.Header.Set("Nats-Batch-Id", id)
				m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
				m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, "0")
				if i < len(keys)-1 {
					if err := nc.PublishMsg(m); err != nil {
						return err
					}
					continue
				}
				m.Header.Set("Nats-Batch-Commit", "1")
				reply, err := nc.RequestMsgWithContext(ctx, m)
				if err != nil {
					return err
				}
				var ack struct {
					Error *jetstream.APIError `json:"error"`
					Count int                 `json:"count"`
				}
				if err := json.Unmarshal(reply.Data, &ack); err != nil {
					return err
				}
				if ack.Error != nil || ack.Count != len(keys) {
					return fmt.Errorf("batch %s: %+v, count %d", id, ack.Error, ack.Count)
				}
			}
			return nil
		})
	})
}
