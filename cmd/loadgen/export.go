package main

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// exportReport is what the export stream (--export, embedded) held for the
// run's invitations.
type exportReport struct {
	Invitations int64 `json:"invitations"` // invitations of this run with transitions exported
	Events      int64 `json:"events"`      // transitions exported for them
	// Missing: invitations whose exported transitions do not chain (one
	// does not name the one before it) or do not end with the outcome
	// loadgen saw. Duplicates: transitions exported more than once.
	Missing    int64 `json:"missing"`
	Duplicates int64 `json:"duplicates"`
}

// checkExport reads the whole export stream once, keeps this run's
// invitations (their ids carry the run's prefix), and checks each: every
// transition once, each naming the one before it, the last being the
// terminal revision loadgen saw when it still tracks the invitation.
//
// The projector exports a moment after each commit, so a check that finds
// something missing is made again, every second for up to settle
// (exportSettle), before it counts, and for settle more each time a check
// finds fewer problems than every check before it: exports still arriving
// (a cluster serving again only at the end of the drain, its brokers
// resolving the writes whose answers they lost) are late, not lost, and
// counted in a note. A stream that cannot be read at all (a server just back
// from a partition, a leader being elected) is not a missing transition: the
// read is retried, on a new connection each time, until ctx ends.
func (r *run) checkExport(ctx context.Context, open exportOpener, settle time.Duration) (*exportReport, map[string][]protocol.Transition) {
	until := time.Now().Add(settle)
	first, fewest := -1, 0 // problems at the first readable check, and the fewest since
	for {
		actx, cancel := context.WithTimeout(ctx, exportAttempt)
		rep, byID, problems, unreadable := r.readExport(actx, open)
		cancel()
		switch {
		case unreadable:
		case first < 0:
			first, fewest = len(problems), len(problems)
		case len(problems) < fewest:
			fewest, until = len(problems), time.Now().Add(settle)
		}
		again := unreadable || time.Now().Before(until)
		if len(problems) == 0 || !again || ctx.Err() != nil {
			if late := first - len(problems); late > 0 {
				r.st.note(fmt.Sprintf("export: %d invitations' last transitions exported after the first check", late))
			}
			for _, p := range problems {
				r.tr.violate(p.kind, "%s", p.what)
			}
			return rep, byID
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

const (
	// exportSettle bounds how long checkExport waits for the last exports.
	exportSettle = 10 * time.Second
	// exportAttempt bounds one read of the export stream.
	exportAttempt = 15 * time.Second
)

// exportProblem is a violation checkExport would report.
type exportProblem struct{ kind, what string }

// exportOpener connects to where the run's export is read; the returned
// func closes what it opened.
type exportOpener func() (jetstream.JetStream, func(), error)

// readExport reads and checks the export stream once; unreadable reports
// that the stream could not be read to its end, so nothing was checked.
func (r *run) readExport(ctx context.Context, open exportOpener) (rep *exportReport, byID map[string][]protocol.Transition, problems []exportProblem, unreadable bool) {
	rep = &exportReport{}
	problem := func(kind, format string, args ...any) {
		problems = append(problems, exportProblem{kind, fmt.Sprintf(format, args...)})
	}
	js, done, err := open()
	if err != nil {
		problem(vExportMissing, "export: cannot connect: %v", err)
		return rep, nil, problems, true
	}
	defer done()
	cons, err := js.OrderedConsumer(ctx, subjects.ExportStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		problem(vExportMissing, "export: cannot read %s: %v", subjects.ExportStream, err)
		return rep, nil, problems, true
	}
	byID = map[string][]protocol.Transition{}
	for {
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			problem(vExportMissing, "export: read: %v", err)
			return rep, nil, problems, true
		}
		n := 0
		for m := range batch.Messages() {
			n++
			var t protocol.Transition
			if err := msgpack.Unmarshal(m.Data(), &t); err != nil {
				problem(vExportMissing, "export: undecodable transition on %s: %v", m.Subject(), err)
				continue
			}
			if strings.HasPrefix(t.ID, r.runID+"-") {
				byID[t.ID] = append(byID[t.ID], t)
			}
		}
		if err := cmp.Or(batch.Error(), ctx.Err()); err != nil {
			problem(vExportMissing, "export: read: %v", err)
			return rep, nil, problems, true
		}
		if n == 0 {
			break
		}
	}
	for id, ts := range byID {
		rep.Invitations++
		rep.Events += int64(len(ts))
		seen := map[uint64]bool{}
		for _, t := range ts {
			if seen[t.Revision] {
				rep.Duplicates++
				problem(vExportTwice, "%s: revision %d exported twice", id, t.Revision)
			}
			seen[t.Revision] = true
		}
		broken, saw := protocol.CheckChain(ts) != nil, ""
		if s := r.tr.get(id); s != nil && s.done && !s.sendFailed && s.terminal.Revision != 0 {
			saw = fmt.Sprintf(" (loadgen saw %s %s %s at revision %d)", s.terminal.State, s.terminal.CallState, s.terminal.Reason, s.terminal.Revision)
			broken = broken || s.terminal.Revision > ts[len(ts)-1].Revision // the outcome loadgen saw is not exported
		}
		if broken {
			rep.Missing++
			problem(vExportMissing, "%s: exported transitions do not chain to the outcome%s: %+v", id, saw, ts)
		}
	}
	return rep, byID, problems, false
}

// exportSource says where the run's export is read: the embedded brokers'
// JetStream with --export, the broker account at --export-nats (a new
// connection per read), or nowhere (nil).
func exportSource(env *embeddedEnv, cfg *config) exportOpener {
	switch {
	case env != nil && cfg.export:
		return func() (jetstream.JetStream, func(), error) { return env.store().JetStream(), func() {}, nil }
	case cfg.exportNATS != "":
		return func() (jetstream.JetStream, func(), error) {
			nc, err := nats.Connect(cfg.exportNATS, nats.Name("loadgen export check"))
			if err != nil {
				return nil, nil, err
			}
			js, err := jetstream.New(nc)
			if err != nil {
				nc.Close()
				return nil, nil, err
			}
			return js, nc.Close, nil
		}
	}
	return nil
}
