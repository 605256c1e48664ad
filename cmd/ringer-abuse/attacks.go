package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// user logs in one SDK client of this run on its own connection.
func (e *env) user(name string, h client.Handler, opts ...client.Option) (*client.Client, error) {
	nc, err := nats.Connect(e.o.url, nats.Name(name))
	if err != nil {
		return nil, err
	}
	c, err := client.New(nc, e.prefix+"-"+name, "phone", append([]client.Option{client.WithHandler(h)}, opts...)...)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c, c.Login(ctx)
}

// tally counts outcomes by error code ("ok" for none).
type tally struct {
	mu sync.Mutex
	n  map[string]int
}

func (t *tally) add(err error) {
	k := "ok"
	if err != nil {
		k = string(protocol.CodeOf(err))
		if errors.Is(err, context.DeadlineExceeded) {
			k = "TIMEOUT"
		}
	}
	t.mu.Lock()
	if t.n == nil {
		t.n = map[string]int{}
	}
	t.n[k]++
	t.mu.Unlock()
}

func (t *tally) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(t.n)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, t.n[k]))
	}
	return strings.Join(parts, ", ")
}

// storeFill: 20 users send invitations with 8 KB of content to people who
// are not there, as fast as the broker lets them, canceling each.
func (e *env) storeFill() string {
	const users = 20
	var t tally
	var wg sync.WaitGroup
	deadline := time.Now().Add(e.o.duration)
	for u := range users {
		c, err := e.user(fmt.Sprintf("filler%d", u), client.Handler{})
		if err != nil {
			return "login: " + err.Error()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			for n := 0; time.Now().Before(deadline); n++ {
				li := c.CreateLocalInvitation(fmt.Sprintf("%s-ghost%d-%d", e.prefix, u, n))
				li.Content = strings.Repeat("x", protocol.MaxContentLen)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := li.Send(ctx)
				t.add(err)
				if inv := li.Invitation(); err == nil && inv.Live() {
					_ = li.Cancel(ctx)
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	return fmt.Sprintf("%d users send 8 KB invitations → %s", users, &t)
}

// squat: one user invites 50 people who are offline with a 10-minute
// offline window, then a prober calls each once the unreceived hold has
// passed: how many are still busy to everyone?
func (e *env) squat() string {
	mallory, err := e.user("squatter", client.Handler{})
	if err != nil {
		return "login: " + err.Error()
	}
	defer mallory.Close()
	prober, err := e.user("prober", client.Handler{})
	if err != nil {
		return "login: " + err.Error()
	}
	defer prober.Close()
	var t tally
	var victims []string
	for i := range 50 {
		v := fmt.Sprintf("%s-victim%d", e.prefix, i)
		li := mallory.CreateLocalInvitation(v)
		li.Timeouts = &protocol.Timeouts{OfflineMs: (10 * time.Minute).Milliseconds()}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := li.Send(ctx)
		cancel()
		t.add(err)
		if err == nil {
			victims = append(victims, v)
		}
	}
	time.Sleep(e.o.duration) // past the unreceived hold (scripts/abuse.sh sets it below the duration)
	busy := 0
	for _, v := range victims {
		li := prober.CreateLocalInvitation(v)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := li.Send(ctx); err == nil {
			if inv := li.Invitation(); inv.Reason == protocol.ReasonBusy {
				busy++
			} else {
				_ = li.Cancel(ctx)
			}
		}
		cancel()
	}
	if busy > 0 {
		e.harmed("squat: %d of %d victims still busy to others after the hold", busy, len(victims))
	}
	return fmt.Sprintf("50 offline victims, 10 min window → %s; busy after the hold: %d", &t, busy)
}

// deviceStorm: one user logs in (and heartbeats) thousands of devices; once
// their sessions expire, a bystander call ends by logout: how long until
// the other party learns it?
func (e *env) deviceStorm() string {
	ended := make(chan string, 1)
	a, err := e.user("storm-a", client.Handler{OnCallEnded: func(inv protocol.Invitation) { ended <- inv.ID }})
	if err != nil {
		return "login: " + err.Error()
	}
	defer a.Close()
	rang := make(chan *client.RemoteInvitation, 1)
	b, err := e.user("storm-b", client.Handler{OnRemoteInvitationReceived: func(ri *client.RemoteInvitation) { rang <- ri }})
	if err != nil {
		return "login: " + err.Error()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second+e.o.ttl)
	defer cancel()
	li := a.CreateLocalInvitation(b.User())
	if err := li.Send(ctx); err != nil {
		return "bystander call: " + err.Error()
	}
	select {
	case ri := <-rang:
		if err := ri.Accept(ctx, ""); err != nil {
			return "bystander accept: " + err.Error()
		}
	case <-ctx.Done():
		return "bystander call never rang"
	}

	var t tally
	var wg sync.WaitGroup
	var next atomic.Int64
	user := e.prefix + "-stormer"
	for range 8 {
		nc, err := nats.Connect(e.o.url)
		if err != nil {
			return err.Error()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer nc.Close()
			for i := next.Add(1); i <= int64(e.o.devices); i = next.Add(1) {
				for _, verb := range []string{subjects.VerbLogin, subjects.VerbHeartbeat} {
					t.add(rawCommand(nc, user, verb, &protocol.Request{Device: fmt.Sprintf("d%d", i)}))
				}
			}
		}()
	}
	wg.Wait()
	time.Sleep(e.o.ttl + 2*time.Second) // the storm's sessions expire: their presence work runs now
	start := time.Now()
	if err := b.Logout(ctx); err != nil {
		return "bystander logout: " + err.Error()
	}
	took := "never"
	select {
	case <-ended:
		d := time.Since(start)
		took = d.Round(time.Millisecond).String()
		if d > time.Second {
			e.harmed("device-storm: a call's end took %s to reach the other party (at most 1s)", took)
		}
	case <-ctx.Done():
		e.harmed("device-storm: a call's end never reached the other party")
	}
	return fmt.Sprintf("%d logins+heartbeats → %s; a call's end reached the other party in %s", 2*e.o.devices, &t, took)
}

// aimedReplies: 2 000 small gets whose reply subject is a bystander's
// events subject; how much reaches the bystander?
func (e *env) aimedReplies() string {
	carol := e.prefix + "-carol"
	events, _ := subjects.UserEvents(carol)
	var msgs, bytes atomic.Int64
	sub, err := e.nc.Subscribe(events, func(m *nats.Msg) { msgs.Add(1); bytes.Add(int64(len(m.Data))) })
	if err != nil {
		return err.Error()
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := e.nc.Flush(); err != nil {
		return err.Error()
	}
	mallory := e.prefix + "-aimer"
	get, _ := subjects.Command(mallory, subjects.VerbGet)
	body := protocol.MustMarshal(&protocol.Request{Device: "phone", ID: "whatever"})
	for range 2000 {
		if err := e.nc.PublishRequest(get, events, body); err != nil {
			return err.Error()
		}
	}
	// An ordinary command of the same user after them; then a second for
	// whatever replies are still on their way.
	_ = rawCommand(e.nc, mallory, subjects.VerbSync, &protocol.Request{Device: "phone"})
	time.Sleep(time.Second)
	if msgs.Load() > 0 {
		e.harmed("aimed-replies: carol received %d replies (%d bytes) meant for another user", msgs.Load(), bytes.Load())
	}
	return fmt.Sprintf("2000 gets (29 B) aimed at carol's events → carol got %d msgs, %d KiB", msgs.Load(), bytes.Load()/1024)
}

// rawCommand sends one command the way the SDK does (the reply on the
// user's own reply subject) and returns its error.
func rawCommand(nc *nats.Conn, user, verb string, req *protocol.Request) error {
	token := "abuse." + nuid.Next()
	replies, err := subjects.UserReply(user, token)
	if err != nil {
		return err
	}
	sub, err := nc.SubscribeSync(replies)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	subj, err := subjects.Command(user, verb)
	if err != nil {
		return err
	}
	m := nats.NewMsg(subj)
	m.Header.Set(subjects.ReplyHeader, token)
	m.Data = protocol.MustMarshal(req)
	if err := nc.PublishMsg(m); err != nil {
		return err
	}
	reply, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		return context.DeadlineExceeded
	}
	rep, err := protocol.DecodeReply(reply.Data)
	if err != nil {
		return err
	}
	if rep.Error != nil {
		return rep.Error
	}
	return nil
}
