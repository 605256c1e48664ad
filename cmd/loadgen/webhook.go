package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ringer-dev/ringer/internal/signature"
	"github.com/ringer-dev/ringer/protocol"
)

// webhookReport is what a webhook relay (ringer-webhook, pointed at
// --webhook-listen) delivered for the run's invitations.
type webhookReport struct {
	Delivered  int64 `json:"delivered"`    // transitions delivered (first time each)
	Duplicates int64 `json:"duplicates"`   // deliveries of a transition already delivered (at least once)
	OutOfOrder int64 `json:"out_of_order"` // a transition delivered after a later one of its invitation
	// Missing: exported transitions never delivered (checked when loadgen
	// can read the export: --export or --export-nats).
	Missing int64 `json:"missing"`
}

// webhookSink serves the relay's deliveries: it checks each signature and
// that each invitation's transitions arrive in revision order.
type webhookSink struct {
	r    *run
	mu   sync.Mutex
	last map[string]uint64 // newest revision delivered per invitation
	seen map[string]bool   // <id>.<revision> delivered
	rep  webhookReport
	stop func()
}

// startWebhooks serves POST deliveries on cfg.webhookListen.
func (r *run) startWebhooks() error {
	if r.cfg.webhookListen == "" {
		return nil
	}
	ln, err := net.Listen("tcp", r.cfg.webhookListen)
	if err != nil {
		return fmt.Errorf("--webhook-listen: %w", err)
	}
	secret := []byte(os.Getenv(r.cfg.webhookSecretEnv))
	ws := &webhookSink{r: r, last: map[string]uint64{}, seen: map[string]bool{}}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := signature.ReadVerified(req, secret, 1<<20, time.Now(), 5*time.Minute)
		if err != nil {
			r.tr.violate(vWebhookOrder, "webhook delivery %s unread or badly signed: %v", req.Header.Get("Ringer-Event-Id"), err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var t protocol.Transition
		if err := json.Unmarshal(body, &t); err != nil || t.ID == "" {
			r.st.note("undecodable webhook delivery")
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		ws.handle(t)
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = srv.Serve(ln) }()
	ws.stop = func() { _ = srv.Close() }
	r.webhooks = ws
	return nil
}

func (ws *webhookSink) handle(t protocol.Transition) {
	if !strings.HasPrefix(t.ID, ws.r.runID+"-") {
		return // another run's
	}
	key := fmt.Sprintf("%s.%d", t.ID, t.Revision)
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.seen[key] {
		ws.rep.Duplicates++
		return
	}
	ws.seen[key] = true
	ws.rep.Delivered++
	if t.Revision < ws.last[t.ID] {
		ws.rep.OutOfOrder++
		ws.r.tr.violate(vWebhookOrder, "%s: revision %d delivered after %d", t.ID, t.Revision, ws.last[t.ID])
		return
	}
	ws.last[t.ID] = t.Revision
}

// webhookSettle bounds how long check waits for the last deliveries: a
// relay that lost its connection gets what it held again after its ack
// wait.
const webhookSettle = 30 * time.Second

// check waits (up to webhookSettle) for every exported transition to be
// delivered, then reports.
func (ws *webhookSink) check(exported map[string][]protocol.Transition) *webhookReport {
	missing := func() (n int64, sample string) {
		ws.mu.Lock()
		defer ws.mu.Unlock()
		for id, ts := range exported {
			for _, t := range ts {
				if !ws.seen[fmt.Sprintf("%s.%d", id, t.Revision)] {
					n++
					sample = fmt.Sprintf("%s: revision %d (%s) exported, never delivered", id, t.Revision, t.State)
				}
			}
		}
		return n, sample
	}
	deadline := time.Now().Add(webhookSettle)
	n, sample := missing()
	for n > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Second) // the relay delivers a moment after the export
		n, sample = missing()
	}
	ws.stop()
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.rep.Missing = n
	if n > 0 {
		ws.r.tr.violate(vWebhookMissing, "%d exported transitions never delivered, e.g. %s", n, sample)
	}
	rep := ws.rep
	return &rep
}
