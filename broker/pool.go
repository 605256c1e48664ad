package broker

import (
	"context"
	"hash/fnv"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/ringer-dev/ringer/subjects"
)

// pool runs consumed messages on a fixed set of goroutines, sharded by key
// (the invitation id or user), so that one broker handles the changes of one
// invitation in stream order while different invitations proceed in parallel.
type pool struct {
	shards  []chan jetstream.Msg
	handle  func(context.Context, jetstream.Msg)
	shardBy func(jetstream.Msg) string
	wg      sync.WaitGroup
	once    sync.Once
}

func newPool(n, depth int, handle func(context.Context, jetstream.Msg), shardBy func(jetstream.Msg) string) *pool {
	p := &pool{shards: make([]chan jetstream.Msg, n), handle: handle, shardBy: shardBy}
	for i := range p.shards {
		ch := make(chan jetstream.Msg, depth)
		p.shards[i] = ch
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for m := range ch {
				p.handle(context.Background(), m)
			}
		}()
	}
	return p
}

func (p *pool) dispatch(m jetstream.Msg) {
	h := fnv.New32a()
	_, _ = h.Write([]byte(p.shardBy(m)))
	p.shards[h.Sum32()%uint32(len(p.shards))] <- m
}

func (p *pool) close() {
	p.once.Do(func() {
		for _, ch := range p.shards {
			close(ch)
		}
		p.wg.Wait()
	})
}

func invitationOf(m jetstream.Msg) string {
	id, _ := subjects.ParseInvitationSubject(m.Subject())
	return id
}

func timerOf(m jetstream.Msg) string {
	id, _ := subjects.ParseTimerFire(m.Subject())
	return id
}

func sessionUserOf(m jetstream.Msg) string {
	u, _, _ := subjects.ParseSessionSubject(m.Subject())
	return u
}
