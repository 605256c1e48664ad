// Live progress: one machine-parsable line per second on stderr.
package main

import (
	"fmt"
	"sync"
	"time"
)

// progress prints, every second until stopped,
//
//	progress t=<seconds> started=<n> completed=<n> rate=<per_s> inflight=<n> errors=<n> done=<percent> eta=<seconds>
//
// where rate is completions per second over the last interval, done how far
// the load window is (of --count started invitations, else of --duration)
// and eta the seconds left of it at the current pace. Scripts parse it as
// key=value pairs: add fields at the end only. It also integrates the number of
// logged-in users over time, to estimate the heartbeat writes of the run.
type progress struct {
	r     *run
	start time.Time
	stop  chan struct{}
	wg    sync.WaitGroup

	mu          sync.Mutex
	userSeconds float64 // ∫ logged-in users dt
}

func startProgress(r *run, start time.Time) *progress {
	p := &progress{r: r, start: start, stop: make(chan struct{})}
	p.wg.Add(1)
	go p.loop()
	return p
}

func (p *progress) loop() {
	defer p.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last, lastDone := p.start, int64(0)
	for {
		select {
		case <-p.stop:
			p.integrate(last, time.Now())
			return
		case now := <-t.C:
			done := p.r.st.completed.Load()
			rate := float64(done-lastDone) / now.Sub(last).Seconds()
			p.integrate(last, now)
			started := p.r.st.started.Load()
			pct, eta := p.window(now, started)
			t, inflight, errs := int(now.Sub(p.start).Round(time.Second).Seconds()), p.r.tr.inFlight(), p.r.st.errs.Load()
			fmt.Fprintf(p.r.errw, "progress t=%d started=%d completed=%d rate=%.1f inflight=%d errors=%d done=%d%% eta=%d\n",
				t, started, done, rate, inflight, errs, pct, eta)
			if p.r.tl != nil {
				s := sample{T: t, Started: started, Completed: done, Rate: rate, Inflight: inflight, Errors: errs}
				s.RingP50, s.RingP99, s.RingCount = p.r.st.take(stSendToRing)
				s.AcceptP50, s.AcceptP99, s.AcceptCount = p.r.st.take(stAcceptToAccepted)
				p.r.tl.add(s)
			}
			last, lastDone = now, done
		}
	}
}

func (p *progress) integrate(from, to time.Time) {
	p.mu.Lock()
	p.userSeconds += float64(p.r.pool.loggedIn.Load()) * to.Sub(from).Seconds()
	p.mu.Unlock()
}

// end stops the ticker and returns ∫ logged-in users dt, in user-seconds.
func (p *progress) end() float64 {
	close(p.stop)
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.userSeconds
}

// window is how far the load window is at now, in percent, and the seconds
// it has left: by --count at the pace so far, else by --duration.
func (p *progress) window(now time.Time, started int64) (pct, eta int) {
	elapsed := now.Sub(p.start).Seconds()
	if c := p.r.cfg.count; c > 0 {
		pct = int(min(100*started/c, 100))
		if started > 0 && started < c {
			eta = int(float64(c-started)*elapsed/float64(started) + 0.5)
		}
		return pct, eta
	}
	total := p.r.cfg.duration.Seconds()
	return int(min(100*elapsed/total, 100)), int(max(total-elapsed, 0))
}
