// Package ringertest wires real brokers and clients together for tests: an
// embedded NATS server (or cluster), brokers on their own connections, and
// clients whose callbacks are recorded so tests can wait on them with
// deadlines instead of sleeping.
package ringertest

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/ringer-dev/ringer/broker"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/protocol"
)

// Wait is how long a test waits for anything that should happen promptly.
const Wait = 10 * time.Second

// TestConfig is a broker config with short timeouts (1–2 s) for tests.
func TestConfig() broker.Config {
	cfg := broker.DefaultConfig()
	cfg.Name = "test"
	cfg.Timeouts.Offline = 2 * time.Second
	cfg.Timeouts.Expire = 2 * time.Second
	cfg.Timeouts.Accept = 2 * time.Second
	cfg.MinTimeout = 500 * time.Millisecond
	cfg.PresenceTTL = 2 * time.Second
	cfg.AckWait = time.Second
	cfg.ClaimGrace = 3 * time.Second
	// Tests drive a few users hard (races, budgets): per-user rates that
	// no test of another feature runs into. The abuse tests set their own.
	cfg.SendRate, cfg.SendBurst = 1000, 1000
	cfg.CommandRate, cfg.CommandBurst = 1000, 1000
	return cfg
}

// Broker is a running broker with its own connection.
type Broker struct {
	*broker.Broker
	NC *nats.Conn
}

// StartBroker starts a broker on its own connection to url. Under go test
// -v it logs to the test's output (a fuzz test's: to stderr) at info level,
// or debug level with RINGER_TEST_DEBUG set (the glare and claim decisions
// are debug lines).
func StartBroker(t testing.TB, url string, cfg broker.Config) *Broker {
	t.Helper()
	nc := natstest.Connect(t, url, nats.Name("broker "+cfg.Name))
	log := zerolog.Nop()
	if testing.Verbose() {
		lvl := zerolog.InfoLevel
		if os.Getenv("RINGER_TEST_DEBUG") != "" {
			lvl = zerolog.DebugLevel
		}
		log = zerolog.New(zerolog.NewTestWriter(t)).Level(lvl)
		if _, fuzz := t.(*testing.F); fuzz {
			// A fuzz target's broker logs while the target runs, where the
			// F's methods panic (TestWriter calls Helper).
			log = zerolog.New(os.Stderr).Level(lvl)
		}
	}
	b, err := broker.New(nc, cfg, broker.WithLogger(log))
	if err != nil {
		t.Fatal(err)
	}
	// As brokerd does: each try gets its own deadline, since on a cluster
	// still electing its leaders a provisioning request can go unanswered.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := b.StartRetrying(ctx, 10*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Shutdown(ctx)
	})
	return &Broker{Broker: b, NC: nc}
}

// Kill stops the broker the hard way: its connection closes with no drain,
// so whatever it had in flight is unacknowledged and left to its peers.
func (b *Broker) Kill() { b.NC.Close() }

// Env is one server (or cluster) with brokers.
type Env struct {
	T       testing.TB
	URL     string
	Brokers []*Broker
}

// Start runs one embedded server and one broker with cfg.
func Start(t testing.TB, cfg broker.Config) *Env {
	t.Helper()
	s := natstest.RunServer(t)
	e := &Env{T: t, URL: s.ClientURL()}
	e.Brokers = append(e.Brokers, StartBroker(t, e.URL, cfg))
	return e
}

// StartBrokers runs one embedded server and n brokers with TestConfig,
// named b0, b1, …: commands spread over them (one queue group), as do
// the projector's, timers' and presence's work.
func StartBrokers(t testing.TB, n int) *Env {
	t.Helper()
	s := natstest.RunServer(t)
	e := &Env{T: t, URL: s.ClientURL()}
	for i := range n {
		cfg := TestConfig()
		cfg.Name = fmt.Sprintf("b%d", i)
		e.Brokers = append(e.Brokers, StartBroker(t, e.URL, cfg))
	}
	return e
}

// Client is a client whose callbacks are recorded.
type Client struct {
	*client.Client
	NC  *nats.Conn
	Rec *Recorder
}

// NewClient creates (without logging in) user's device on its own connection.
func (e *Env) NewClient(user, device string, opts ...client.Option) *Client {
	e.T.Helper()
	return e.NewClientOn(natstest.Connect(e.T, e.URL, nats.Name(user+"/"+device)), user, device, opts...)
}

// NewClientOn creates (without logging in) user's device on nc.
func (e *Env) NewClientOn(nc *nats.Conn, user, device string, opts ...client.Option) *Client {
	e.T.Helper()
	rec := NewRecorder()
	c, err := client.New(nc, user, device, append([]client.Option{client.WithHandler(rec.Handler())}, opts...)...)
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(c.Close)
	return &Client{Client: c, NC: nc, Rec: rec}
}

// Login creates and logs in user's device.
func (e *Env) Login(user, device string, opts ...client.Option) *Client {
	e.T.Helper()
	return e.login(e.NewClient(user, device, opts...))
}

// LoginOn creates and logs in user's device on nc.
func (e *Env) LoginOn(nc *nats.Conn, user, device string, opts ...client.Option) *Client {
	e.T.Helper()
	return e.login(e.NewClientOn(nc, user, device, opts...))
}

func (e *Env) login(c *Client) *Client {
	e.T.Helper()
	user, device := c.User(), c.Device()
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	if err := c.Login(ctx); err != nil {
		e.T.Fatalf("login %s/%s: %v", user, device, err)
	}
	return c
}

// Invite creates an invitation from c to callee and sends it, failing the
// test if the send command fails. The send's outcome (SENT, or REFUSED/BUSY)
// is the invitation's view.
func (c *Client) Invite(t testing.TB, callee string) *client.LocalInvitation {
	t.Helper()
	li := c.CreateLocalInvitation(callee)
	if err := li.Send(Ctx(t)); err != nil {
		t.Fatalf("%s invites %s: %v", c.User(), callee, err)
	}
	return li
}

// Call puts c in a call with callee's device: c invites, callee accepts,
// and Call returns once c has seen the accept.
func (c *Client) Call(t testing.TB, callee *Client) *client.LocalInvitation {
	t.Helper()
	li := c.Invite(t, callee.User())
	if err := callee.Rec.WaitRemote(t, li.ID).Accept(Ctx(t), ""); err != nil {
		t.Fatalf("%s accepts %s: %v", callee.User(), li.ID, err)
	}
	c.Rec.Wait(t, "Accepted "+li.ID)
	return li
}

// Ctx returns a context bounded by Wait.
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	t.Cleanup(cancel)
	return ctx
}

// Recorder records callbacks as "Name id detail" lines.
type Recorder struct {
	mu     sync.Mutex
	lines  []string
	remote map[string]*client.RemoteInvitation
	notify chan struct{}
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder {
	return &Recorder{remote: map[string]*client.RemoteInvitation{}, notify: make(chan struct{})}
}

func (r *Recorder) add(format string, args ...any) {
	r.mu.Lock()
	r.lines = append(r.lines, fmt.Sprintf(format, args...))
	close(r.notify)
	r.notify = make(chan struct{})
	r.mu.Unlock()
}

// Handler returns callbacks that record into r.
func (r *Recorder) Handler() client.Handler {
	return client.Handler{
		OnLocalInvitationReceivedByPeer: func(li *client.LocalInvitation) { r.add("ReceivedByPeer %s", li.ID) },
		OnLocalInvitationAccepted: func(li *client.LocalInvitation, resp string) {
			r.add("Accepted %s %s", li.ID, resp)
		},
		OnLocalInvitationRefused:  func(li *client.LocalInvitation, resp string) { r.add("Refused %s %s", li.ID, resp) },
		OnLocalInvitationCanceled: func(li *client.LocalInvitation) { r.add("Canceled %s", li.ID) },
		OnLocalInvitationMerged:   func(li *client.LocalInvitation, into string) { r.add("Merged %s into %s", li.ID, into) },
		OnLocalInvitationFailure: func(li *client.LocalInvitation, reason protocol.Reason) {
			r.add("Failure %s %s", li.ID, reason)
		},
		OnLocalInvitationLegChanged: func(li *client.LocalInvitation, l protocol.Leg) {
			r.add("Leg %s %s %s %s", li.ID, l.User, l.State, l.Reason)
		},
		OnRemoteInvitationReceived: func(ri *client.RemoteInvitation) {
			r.mu.Lock()
			r.remote[ri.ID()] = ri
			r.mu.Unlock()
			r.add("RemoteReceived %s %s", ri.ID(), ri.Content())
		},
		OnRemoteInvitationAccepted: func(ri *client.RemoteInvitation) { r.add("RemoteAccepted %s", ri.ID()) },
		OnRemoteInvitationRefused:  func(ri *client.RemoteInvitation) { r.add("RemoteRefused %s", ri.ID()) },
		OnRemoteInvitationCanceled: func(ri *client.RemoteInvitation) { r.add("RemoteCanceled %s", ri.ID()) },
		OnRemoteInvitationFailure: func(ri *client.RemoteInvitation, reason protocol.Reason) {
			r.add("RemoteFailure %s %s", ri.ID(), reason)
		},
		OnRemoteInvitationHandledElsewhere: func(ri *client.RemoteInvitation, s protocol.State) {
			r.add("HandledElsewhere %s %s", ri.ID(), s)
		},
		OnCallEnded: func(inv protocol.Invitation) { r.add("CallEnded %s %s", inv.ID, inv.Reason) },
		OnConnectionStateChanged: func(s client.ConnectionState, why client.ConnectionChangeReason) {
			r.add("Connection %s %s", s, why)
		},
	}
}

// Lines returns a copy of what was recorded.
func (r *Recorder) Lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}

// Remote returns the RemoteInvitation received with id.
func (r *Recorder) Remote(id string) *client.RemoteInvitation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.remote[id]
}

// Wait blocks until a recorded line starts with one of prefixes and returns
// the first such line.
func (r *Recorder) Wait(t testing.TB, prefixes ...string) string {
	t.Helper()
	deadline := time.NewTimer(Wait)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		for _, l := range r.lines {
			for _, prefix := range prefixes {
				if strings.HasPrefix(l, prefix) {
					r.mu.Unlock()
					return l
				}
			}
		}
		ch := r.notify
		r.mu.Unlock()
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("no %q within %s; recorded: %q", prefixes, Wait, r.Lines())
		}
	}
}

// WaitRemote waits for an incoming invitation and returns its handle.
func (r *Recorder) WaitRemote(t testing.TB, id string) *client.RemoteInvitation {
	t.Helper()
	r.Wait(t, "RemoteReceived "+id)
	return r.Remote(id)
}

// Count returns how many recorded lines start with prefix.
func (r *Recorder) Count(prefix string) int {
	n := 0
	for _, l := range r.Lines() {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

// WaitFree waits until none of users is busy: no claim on their lines holds
// (with TestConfig's claim grace) and no manual flag is set.
func WaitFree(t testing.TB, st *store.Store, users ...string) {
	t.Helper()
	rules := TestConfig().LineRules()
	natstest.Eventually(t, Wait+rules.Grace, func() error {
		for _, u := range users {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			busy, l, err := st.Busy(ctx, u, rules)
			cancel()
			if err != nil {
				return err
			}
			if busy {
				return fmt.Errorf("%s still busy: claims %v, manual %v", u, l.IDs(), l.Manual)
			}
		}
		return nil
	})
}

// ReportPercentiles reports p50/p99/max of ds (in ms) as benchmark metrics.
func ReportPercentiles(b *testing.B, name string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	pick := func(q float64) time.Duration { return ds[int(q*float64(len(ds)-1))] }
	b.ReportMetric(ms(pick(0.50)), name+"_p50_ms")
	b.ReportMetric(ms(pick(0.99)), name+"_p99_ms")
	b.ReportMetric(ms(ds[len(ds)-1]), name+"_max_ms")
}

// WaitServing waits until a command sent through each of urls gets an
// answer: in a cluster, the brokers' queue subscriptions reach the other
// servers asynchronously, and until then requests there have no responders.
func WaitServing(t testing.TB, urls ...string) {
	t.Helper()
	for _, u := range urls {
		nc := natstest.Connect(t, u)
		natstest.Eventually(t, Wait, func() error {
			_, err := nc.Request("ringer.v1.cmd.probe.sync", nil, time.Second)
			return err
		})
		nc.Close()
	}
}
