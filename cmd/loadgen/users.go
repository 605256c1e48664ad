// Simulated users: their clients on a shared connection pool, the idle free-lists and the engaged set.
package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/client"
)

// user is one simulated user. Its client changes when it reconnects after
// a disconnect (a new device id each time).
type user struct {
	id      string
	offline bool // an offline callee: never logs in
	asleep  bool // a push callee: logged out with a push target, logs in when the gateway wakes it
	nc      *nats.Conn

	mu     sync.Mutex
	cl     *client.Client
	device string
	gen    int

	// guarded by pool.mu
	holds   int // invitations this user is a party to (or targeted by)
	engaged int // invitations ringing (or in a call) at this user as callee
	engIdx  int // index in pool.engaged, -1 if absent
}

func (u *user) client() (*client.Client, string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.cl, u.device
}

// fifo is a queue of idle users, oldest first; each becomes usable at ready.
type fifo struct {
	items []idle
	head  int
}

type idle struct {
	u     *user
	ready time.Time
}

func (f *fifo) len() int { return len(f.items) - f.head }

func (f *fifo) push(u *user, ready time.Time) {
	if f.head > 1024 && f.head*2 > len(f.items) {
		f.items = append(f.items[:0], f.items[f.head:]...)
		f.head = 0
	}
	f.items = append(f.items, idle{u, ready})
}

// readyN reports whether the n oldest users are usable at now. Ready times
// are pushed in non-decreasing order, so the n-th oldest decides.
func (f *fifo) readyN(n int, now time.Time) bool {
	return f.len() >= n && !f.items[f.head+n-1].ready.After(now)
}

func (f *fifo) pop() *user {
	u := f.items[f.head].u
	f.items[f.head] = idle{}
	f.head++
	return u
}

// pool pairs callers and callees so that busy collisions happen only when
// the mix asks for them: a user is idle (in a free-list) only while it is a
// party to nothing, and re-enters the list at the back, after a cool-down.
type pool struct {
	cooldown time.Duration

	mu       sync.Mutex
	online   fifo
	offline  fifo
	asleep   fifo
	engaged  []*user
	all      []*user
	loggedIn atomic.Int64
}

func newPool(cooldown time.Duration) *pool { return &pool{cooldown: cooldown} }

// add makes u idle now.
func (p *pool) add(u *user) {
	p.mu.Lock()
	defer p.mu.Unlock()
	u.engIdx = -1
	switch {
	case u.offline:
		p.offline.push(u, time.Time{})
	case u.asleep:
		p.asleep.push(u, time.Time{})
	default:
		p.online.push(u, time.Time{})
	}
}

// take returns n idle online users (holding them), or nil if there are not
// that many ready.
func (p *pool) take(n int, now time.Time) []*user {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.online.readyN(n, now) {
		return nil
	}
	us := make([]*user, n)
	for i := range us {
		us[i] = p.online.pop()
		us[i].holds++
	}
	return us
}

// takeOffline returns an idle offline callee, or nil.
func (p *pool) takeOffline(now time.Time) *user { return p.takeFrom(&p.offline, now) }

// takeAsleep returns an idle asleep (push) callee, or nil.
func (p *pool) takeAsleep(now time.Time) *user { return p.takeFrom(&p.asleep, now) }

func (p *pool) takeFrom(f *fifo, now time.Time) *user {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !f.readyN(1, now) {
		return nil
	}
	u := f.pop()
	u.holds++
	return u
}

// takeEngaged returns a user that is ringing or in a call right now
// (holding it once more), picked with x in [0,1), or nil.
func (p *pool) takeEngaged(x float64) *user {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.engaged) == 0 {
		return nil
	}
	u := p.engaged[int(x*float64(len(p.engaged)))%len(p.engaged)]
	u.holds++
	return u
}

// hold adds a hold on an already held user.
func (p *pool) hold(u *user) {
	p.mu.Lock()
	u.holds++
	p.mu.Unlock()
}

// release drops one hold; a user held by nothing is idle again after the
// cool-down.
func (p *pool) release(u *user, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	u.holds--
	if u.holds > 0 {
		return
	}
	if u.holds < 0 {
		panic("loadgen: user released more often than held: " + u.id)
	}
	switch {
	case u.offline:
		p.offline.push(u, now.Add(p.cooldown))
	case u.asleep:
		p.asleep.push(u, now.Add(p.cooldown))
	default:
		p.online.push(u, now.Add(p.cooldown))
	}
}

// engage adds u to the engaged set (a callee that rings or is in a call).
func (p *pool) engage(u *user) {
	p.mu.Lock()
	defer p.mu.Unlock()
	u.engaged++
	if u.engaged == 1 {
		u.engIdx = len(p.engaged)
		p.engaged = append(p.engaged, u)
	}
}

// disengage undoes engage.
func (p *pool) disengage(u *user) {
	p.mu.Lock()
	defer p.mu.Unlock()
	u.engaged--
	if u.engaged > 0 || u.engIdx < 0 {
		return
	}
	last := p.engaged[len(p.engaged)-1]
	p.engaged[u.engIdx] = last
	last.engIdx = u.engIdx
	p.engaged = p.engaged[:len(p.engaged)-1]
	u.engIdx = -1
}

// asyncErrors counts the asynchronous errors NATS reports on loadgen's
// connections (permission violations, slow consumers), for the report's
// notes, instead of letting nats.go print each one.
var asyncErrors = struct {
	sync.Mutex
	n map[string]int64
}{n: map[string]int64{}}

func noteAsyncError(_ *nats.Conn, _ *nats.Subscription, err error) {
	msg := err.Error()
	if len(msg) > 100 {
		msg = msg[:100]
	}
	asyncErrors.Lock()
	asyncErrors.n["NATS async error: "+msg]++
	asyncErrors.Unlock()
}

// connect opens the shared connections.
func connect(url string, n int, name string) ([]*nats.Conn, error) {
	var conns []*nats.Conn
	for i := 0; i < n; i++ {
		nc, err := nats.Connect(url, nats.Name(fmt.Sprintf("%s %d", name, i)), nats.MaxReconnects(-1),
			nats.ReconnectWait(250*time.Millisecond), nats.Timeout(10*time.Second), nats.ErrorHandler(noteAsyncError))
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, fmt.Errorf("connect %s: %w", url, err)
		}
		conns = append(conns, nc)
	}
	return conns, nil
}

// loginAll logs every online user in (bounded concurrency, three attempts
// each) and makes the users idle. Users that cannot log in are left out.
func (r *run) loginAll(ctx context.Context) error {
	var online []*user
	for _, u := range r.pool.all {
		if u.offline || u.asleep {
			r.pool.add(u)
		} else {
			online = append(online, u)
		}
	}
	sem := make(chan struct{}, r.cfg.loginConc)
	var wg sync.WaitGroup
	var failed atomic.Int64
	var lastErr atomic.Value
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintf(r.errw, "loadgen: logged in %d/%d users\n", r.pool.loggedIn.Load(), len(online))
			}
		}
	}()
	for _, u := range online {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := r.login(ctx, u); err != nil {
				failed.Add(1)
				lastErr.Store(err)
				return
			}
			r.pool.add(u)
		}()
	}
	wg.Wait()
	close(done)
	if n := failed.Load(); n > 0 {
		fmt.Fprintf(r.errw, "loadgen: %d users could not log in (last error: %v); running without them\n", n, lastErr.Load())
		if int(n) == len(online) {
			return fmt.Errorf("no user could log in: %v", lastErr.Load())
		}
	}
	return ctx.Err()
}

// login gives u a fresh client (a new device id) and logs it in.
func (r *run) login(ctx context.Context, u *user) error {
	u.mu.Lock()
	u.gen++
	device := fmt.Sprintf("d%d", u.gen)
	u.mu.Unlock()
	// Thousands of clients share this process: each remembers an ended
	// invitation only as long as the tracker checks late callbacks
	// (keepDone), not the SDK's five minutes, or a long run's heap, and
	// with it every garbage collection's pause of the broker in the same
	// process, would grow with the run.
	cl, err := client.New(u.nc, u.id, device, client.WithHandler(r.handler(u, device)), client.WithRemember(keepDone))
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = cl.Login(lctx)
		cancel()
		if err == nil {
			break
		}
		r.st.cmdError("login", err)
		if attempt == 2 || ctx.Err() != nil {
			cl.Close()
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
	u.mu.Lock()
	u.cl, u.device = cl, device
	u.mu.Unlock()
	r.pool.loggedIn.Add(1)
	if s := cl.Session(); s.TTLMs > 0 {
		r.sessionTTL.CompareAndSwap(0, s.TTLMs)
		r.heartbeatMs.CompareAndSwap(0, s.HeartbeatMs)
	}
	return nil
}
