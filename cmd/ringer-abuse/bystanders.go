package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/client"
)

// bystanders are pairs of ordinary users calling each other in a loop
// (invite, accept, hang up) while the attacks run: what they see is what the
// attacks cost everyone else.
type bystanders struct {
	mu       sync.Mutex
	setups   []time.Duration // send → the caller learns the accept
	ok, errs int
	lastErr  string
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	conns    []*nats.Conn
}

// pairs of bystanders, each making a call every pace.
const (
	pairs = 4
	pace  = 1200 * time.Millisecond
)

func startBystanders(e *env) (*bystanders, error) {
	ctx, cancel := context.WithCancel(context.Background())
	b := &bystanders{cancel: cancel}
	for i := range pairs {
		accepted := make(chan string, 4)
		caller, err := b.login(e, fmt.Sprintf("%s-by%da", e.prefix, i), &client.Handler{
			OnLocalInvitationAccepted: func(li *client.LocalInvitation, _ string) { accepted <- li.ID },
		})
		if err != nil {
			b.stop()
			return nil, err
		}
		rings := make(chan *client.RemoteInvitation, 4)
		callee, err := b.login(e, fmt.Sprintf("%s-by%db", e.prefix, i), &client.Handler{
			OnRemoteInvitationReceived: func(ri *client.RemoteInvitation) { rings <- ri },
		})
		if err != nil {
			b.stop()
			return nil, err
		}
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			// One call every pace at most: people do not dial more often
			// than the per-user send rate allows (1/s by default).
			for ctx.Err() == nil {
				next := time.Now().Add(pace)
				b.call(ctx, caller, callee, rings, accepted)
				select {
				case <-time.After(time.Until(next)):
				case <-ctx.Done():
				}
			}
		}()
	}
	return b, nil
}

func (b *bystanders) login(e *env, user string, h *client.Handler) (*client.Client, error) {
	nc, err := nats.Connect(e.o.url, nats.Name(user), nats.MaxReconnects(-1))
	if err != nil {
		return nil, err
	}
	b.conns = append(b.conns, nc)
	var opts []client.Option
	if h != nil {
		opts = append(opts, client.WithHandler(*h))
	}
	c, err := client.New(nc, user, "phone", opts...)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c, c.Login(ctx)
}

// call makes one call: invite, wait for the ring, accept, wait until the
// caller sees it accepted, hang up.
func (b *bystanders) call(ctx context.Context, caller, callee *client.Client, rings chan *client.RemoteInvitation, accepted chan string) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	li := caller.CreateLocalInvitation(callee.User())
	fail := func(err error) {
		if ctx.Err() != nil && context.Cause(ctx) == context.Canceled {
			return // stopping
		}
		b.mu.Lock()
		b.errs++
		b.lastErr = err.Error()
		b.mu.Unlock()
		time.Sleep(100 * time.Millisecond) // pace a failing loop
	}
	if err := li.Send(ctx); err != nil {
		fail(err)
		return
	}
	var ri *client.RemoteInvitation
	for ri == nil {
		select {
		case r := <-rings:
			if r.ID() == li.ID {
				ri = r
			}
		case <-ctx.Done():
			fail(fmt.Errorf("%s never rang", li.ID))
			return
		}
	}
	if err := ri.Accept(ctx, ""); err != nil {
		fail(err)
		return
	}
	for done := false; !done; {
		select {
		case id := <-accepted:
			done = id == li.ID
		case <-ctx.Done():
			fail(fmt.Errorf("%s: the caller never saw the accept", li.ID))
			return
		}
	}
	setup := time.Since(start)
	_ = caller.Hangup(ctx, li.ID)
	b.mu.Lock()
	b.ok++
	b.setups = append(b.setups, setup)
	b.mu.Unlock()
}

func (b *bystanders) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.setups, b.ok, b.errs, b.lastErr = nil, 0, 0, ""
}

// snapshot describes the calls since reset, and counts the failed ones.
func (b *bystanders) snapshot() (string, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := fmt.Sprintf("%d/%d", b.ok, b.errs)
	if len(b.setups) > 0 {
		ds := slices.Clone(b.setups)
		slices.Sort(ds)
		q := func(p float64) time.Duration { return ds[min(len(ds)-1, int(p*float64(len(ds))))] }
		s += fmt.Sprintf(", %s/%s", q(0.5).Round(100*time.Microsecond), q(0.99).Round(100*time.Microsecond))
	}
	if b.lastErr != "" {
		s += " (" + b.lastErr + ")"
	}
	return s, b.errs
}

func (b *bystanders) stop() {
	b.cancel()
	b.wg.Wait()
	for _, nc := range b.conns {
		nc.Close()
	}
}
