// Group calls and glare: scripted scenarios, each on its own goroutine, with their own invariants.
package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/ringer-dev/ringer/client"
	"github.com/ringer-dev/ringer/protocol"
)

// Group and glare violation kinds.
const (
	vGroupWinners = "group_winners_not_one"         // a FIRST invitation with two accepts that succeeded, or a winner the record does not name
	vGroupViews   = "group_views_differ"            // a callee's own view and the caller's leg of it disagree, or a device's view and the broker's
	vJoinEnd      = "join_call_end_wrong"           // a JOIN call ended with two parties in it, or lived on with fewer
	vGlare        = "glare_not_one_call"            // two users calling each other did not end up in exactly one call
	vGroupTwice   = "group_terminal_callback_twice" // a party got two different terminal callbacks for one group invitation
)

// Group outcomes, by name in the report.
const (
	outGroupAnswered = "GROUP_ANSWERED" // FIRST: one callee won the call
	outGroupJoined   = "GROUP_JOINED"   // JOIN: the call ran with late join, leave and rejoin, and ended when one was left
	outGlareMerged   = "GLARE_MERGED"   // glare: one call, the other invitation merged into it
)

// groupCall is what the scenario of one group (or glare) invitation
// learns from the parties' callbacks.
type groupCall struct {
	mu    sync.Mutex
	rings map[string]chan *client.RemoteInvitation // per callee: its RemoteInvitation, once
	saw   map[string][]string                      // per party: distinct terminal callbacks
}

// groups routes the callbacks of scenario invitations to their scenario.
type groups struct {
	mu    sync.Mutex
	calls map[string]*groupCall
}

func (g *groups) add(id string, users []*user) *groupCall {
	gc := &groupCall{rings: map[string]chan *client.RemoteInvitation{}, saw: map[string][]string{}}
	for _, u := range users {
		gc.rings[u.id] = make(chan *client.RemoteInvitation, 1)
	}
	g.mu.Lock()
	if g.calls == nil {
		g.calls = map[string]*groupCall{}
	}
	g.calls[id] = gc
	g.mu.Unlock()
	return gc
}

func (g *groups) get(id string) *groupCall {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls[id]
}

func (g *groups) drop(ids ...string) {
	g.mu.Lock()
	for _, id := range ids {
		delete(g.calls, id)
	}
	g.mu.Unlock()
}

// grouped hands a callback to its scenario; false if id is not one.
// what is the callback ("" for a ring, with ri set).
func (r *run) grouped(id string, u *user, what string, ri *client.RemoteInvitation) bool {
	gc := r.groups.get(id)
	if gc == nil {
		return false
	}
	gc.mu.Lock()
	defer gc.mu.Unlock()
	if ri != nil && what == "" {
		select {
		case gc.rings[u.id] <- ri:
		default: // rang before (a resync): once is enough
		}
		return true
	}
	if what != "" && !slices.Contains(gc.saw[u.id], what) {
		gc.saw[u.id] = append(gc.saw[u.id], what)
	}
	return true
}

// ring waits for u's ring of a scenario invitation (nil if none came).
func (gc *groupCall) ring(ctx context.Context, u *user, within time.Duration) *client.RemoteInvitation {
	t := time.NewTimer(within)
	defer t.Stop()
	select {
	case ri := <-gc.rings[u.id]:
		return ri
	case <-t.C:
	case <-ctx.Done():
	}
	return nil
}

// startGroup takes the users of a group or glare scenario and runs it.
func (r *run) startGroup(i uint64, p plan, now time.Time) *invState {
	n := 2
	switch p.b {
	case bGroup:
		n = r.cfg.groupCallees + 1 // a JOIN scenario invites one more into its live call
	case bGroupJoin:
		n = r.cfg.groupCallees + 2
	}
	us := r.pool.take(n, now)
	if us == nil {
		return nil
	}
	// The tracker knows the scenario by a key of its own: the parties'
	// events of the invitation are not a 1:1 invitation's to check.
	id := r.localID(fmt.Sprintf("%s-%d", r.runID, i), us[0])
	s := &invState{id: id + "~scenario", group: id, p: p, caller: us[0], callee: us[1]}
	r.tr.register(s)
	r.st.started.Add(1)
	r.bg.Add(1)
	go func() {
		defer r.bg.Done()
		var out string
		switch p.b {
		case bGroup:
			out = r.groupFirst(s, us)
		case bGroupJoin:
			out = r.groupJoin(s, us)
		default:
			out = r.glare(s, us)
		}
		r.tr.finish(s, out, time.Now())
		r.st.completed.Add(1)
		for _, u := range us {
			r.pool.release(u, time.Now())
		}
	}()
	return s
}

// sendGroup sends the scenario's invitation from us[0] to callees.
func (r *run) sendGroup(s *invState, mode protocol.Mode, caller *user, callees []*user) (*client.LocalInvitation, *groupCall, error) {
	gc := r.groups.add(s.group, append([]*user{caller}, callees...))
	cl, _ := caller.client()
	ids := make([]string, len(callees))
	for i, u := range callees {
		ids[i] = u.id
	}
	li := cl.CreateGroupInvitation(mode, ids...)
	li.ID, li.Content, li.ChannelID, li.Timeouts = s.group, "loadgen "+s.p.b.String(), "ch-"+s.group, r.timeouts(s.p.b)
	s.sendAt = time.Now()
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	err := li.Send(ctx)
	cancel()
	r.st.record(stSendReply, time.Since(s.sendAt))
	if err != nil {
		r.st.cmdError("send", err)
	}
	return li, gc, err
}

// groupFirst: a FIRST invitation to --group-callees callees, who all accept at once
// (after their think time): exactly one accept may succeed, and the
// record must name that callee; the caller hangs up after the hold.
func (r *run) groupFirst(s *invState, us []*user) string {
	li, gc, err := r.sendGroup(s, protocol.ModeFirst, us[0], us[1:])
	defer r.groups.drop(s.group)
	if err != nil {
		r.settle(s.group, us[0], li.Cancel)
		return outSendFailed
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []string
	)
	for _, u := range us[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ri, err := r.answer(s, gc, u); ri != nil && err == nil {
				mu.Lock()
				winners = append(winners, u.id)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(winners) > 1 {
		r.tr.violate(vGroupWinners, "%s: accepts of %v all succeeded", s.group, winners)
	}
	out := outGroupAnswered
	if len(winners) == 0 {
		out = "GROUP_UNANSWERED" // every ring or accept lost (chaos): say so, do not guess
		r.settle(s.group, us[0], li.Cancel)
	} else {
		time.Sleep(s.p.hold)
		r.settle(s.group, us[0], li.Leave)
	}
	final := r.checkGroup(s, us, gc)
	if len(winners) == 1 && final.Callee != winners[0] {
		r.tr.violate(vGroupWinners, "%s: %s's accept succeeded, the record's winner is %q", s.group, winners[0], final.Callee)
	}
	return out
}

// groupJoin: a JOIN invitation to --group-callees callees who all join;
// the caller invites one more, who joins late; the caller leaves, one callee leaves
// and joins again, then the callees leave one by one. After each leave
// the call must be on exactly while two or more are in it.
func (r *run) groupJoin(s *invState, us []*user) string {
	caller, callees, late := us[0], us[1:len(us)-1], us[len(us)-1]
	li, gc, err := r.sendGroup(s, protocol.ModeJoin, caller, callees)
	defer r.groups.drop(s.group)
	if err != nil {
		r.settle(s.group, caller, li.Cancel)
		return outSendFailed
	}
	gc.mu.Lock()
	gc.rings[late.id] = make(chan *client.RemoteInvitation, 1)
	gc.mu.Unlock()
	joined := map[string]*client.RemoteInvitation{}
	var mu sync.Mutex
	// unsure: a command failed for good (chaos) and may have taken effect
	// all the same: who is in the call is no longer known here, and the
	// counts are not checked (the end-of-scenario checks still are).
	unsure := false
	join := func(u *user) {
		ri, err := r.answer(s, gc, u)
		if ri == nil {
			return
		}
		mu.Lock()
		if err == nil {
			joined[u.id] = ri
		} else {
			unsure = true // it may have joined with its reply lost
		}
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for _, u := range callees {
		wg.Add(1)
		go func() { defer wg.Done(); join(u) }()
	}
	wg.Wait()
	if len(joined) == 0 {
		r.settle(s.group, caller, li.Cancel)
		r.checkGroup(s, us[:len(us)-1], gc)
		return "GROUP_UNANSWERED"
	}
	// A late callee whose invite failed is left out of the final checks:
	// its device never hears of the invitation, and waiting for it to see
	// the end would outlast the drain (CI: a caller's presence lost in a
	// stalled cluster made the invite FORBIDDEN, and the scenario waited
	// 40 s for the late callee's view). One whose line was busy is not
	// waited for by answer and checkGroup.
	parties := us[:len(us)-1]
	if err := r.do("invite", func(ctx context.Context) error { return li.Invite(ctx, late.id) }); err == nil {
		parties = us
		join(late)
	} else if c := errCode(err); c == "TIMEOUT" || c == string(protocol.CodeUnavailable) {
		unsure = true // it may have taken effect: late may be ringing, or even join
	}
	// Who is in the call, as this scenario made it; every leave is checked
	// against the broker's record.
	in, callerLeft := 1+len(joined), false
	leave := func(f func(context.Context) error) {
		// ALREADY_END: an attempt whose reply was lost took effect.
		if err := r.do("hangup", f); err != nil && errCode(err) != string(protocol.CodeAlreadyEnd) {
			unsure = true
			return
		}
		in--
		if !unsure {
			unsure = !r.checkInCall(s, caller, in, callerLeft)
		}
	}
	time.Sleep(s.p.hold)
	callerLeft = true
	leave(li.Leave)
	order := slices.Sorted(func(yield func(string) bool) {
		for u := range joined {
			if !yield(u) {
				return
			}
		}
	})
	if len(order) >= 3 { // one leaves and joins again while the call lives
		ri := joined[order[0]]
		leave(ri.Leave)
		if r.do("accept", func(ctx context.Context) error { return ri.Accept(ctx, "") }) == nil {
			in++
			if !unsure {
				unsure = !r.checkInCall(s, caller, in, callerLeft)
			}
		} else {
			unsure = true
		}
	}
	for _, u := range order {
		if in < 2 && !unsure {
			break // the call ended when the one before left
		}
		leave(joined[u].Leave)
	}
	if unsure {
		r.st.note("groupjoin: a command failed for good; who was in the call not checked")
	}
	r.checkGroup(s, parties, gc)
	return outGroupJoined
}

// legBusy reports whether u's device sees callee's leg of invitation id
// refused as busy (the send's or invite's reply, which the client applied).
func legBusy(u *user, id, callee string) bool {
	cl, _ := u.client()
	v, ok := cl.Invitation(id)
	if !ok {
		return false
	}
	l := v.Leg(callee)
	return l != nil && l.State == protocol.StateRefused && l.Reason == protocol.ReasonBusy
}

// answer waits for u's ring of the scenario's invitation and accepts it
// after the think time; ri is nil if it never rang, at once if u's leg was
// refused as busy (nothing rings: legBusy).
func (r *run) answer(s *invState, gc *groupCall, u *user) (ri *client.RemoteInvitation, err error) {
	if legBusy(s.caller, s.group, u.id) {
		return nil, nil
	}
	done := r.tr.waiting(s, u.id+"'s ring")
	ri = gc.ring(r.ctx, u, 15*time.Second)
	done()
	if ri == nil {
		return nil, nil
	}
	r.st.record(stSendToRing, time.Since(s.sendAt))
	time.Sleep(s.p.think)
	return ri, r.do("accept", func(ctx context.Context) error { return ri.Accept(ctx, "") })
}

// checkInCall asks the broker (through the caller, who may read a call it
// left) whether the call is on, and compares with the parties this
// scenario knows to be in it. A read may come from a replica a moment
// behind (docs/architecture.md, stale reads), so it asks again for up to
// 10 s before it calls a difference a violation: nothing else changes the
// call meanwhile.
func (r *run) checkInCall(s *invState, caller *user, in int, callerLeft bool) (sure bool) {
	defer r.tr.waiting(s, fmt.Sprintf("the record to show %d in the call", in))()
	inv, ok := r.readUntil(caller, s.group, func(inv protocol.Invitation) bool {
		on := inv.CallState == protocol.CallActive
		return on == (in >= 2) && (!on || inv.InCall() == in)
	})
	switch {
	case ok:
		return true
	case inv.ID == "": // never read
	case presenceLost(inv, callerLeft):
		// A party's presence was lost (its NATS server froze longer
		// than the presence TTL): the broker took it out of the call.
		r.st.note("groupjoin: a party's presence was lost; who was in the call not checked")
	default:
		r.tr.violate(vJoinEnd, "%s: %d in the call by the scenario, the record: %s with %d", s.group, in, inv.CallState, inv.InCall())
	}
	return false
}

// presenceLost reports whether a party of inv was taken out of its call
// by a presence loss (callerLeft: the scenario made the caller leave).
func presenceLost(inv protocol.Invitation, callerLeft bool) bool {
	if inv.Reason == protocol.ReasonPeerOffline || !callerLeft && inv.CallerLeftAt != 0 {
		return true
	}
	for _, l := range inv.Legs {
		if l.State == protocol.StateAccepted && l.Reason == protocol.ReasonPeerOffline {
			return true
		}
	}
	return false
}

// recordAtLeast reads invitation id through u until the broker's view is
// at least revision rev (a replica a moment behind answers older ones).
func (r *run) recordAtLeast(u *user, id string, rev uint64) (protocol.Invitation, bool) {
	return r.readUntil(u, id, func(inv protocol.Invitation) bool { return inv.Revision >= rev })
}

// readUntil reads invitation id through u until want holds, for up to
// 10 s; it returns the last view read and whether want held.
func (r *run) readUntil(u *user, id string, want func(protocol.Invitation) bool) (protocol.Invitation, bool) {
	cl, _ := u.client()
	deadline := time.Now().Add(10 * time.Second)
	var last protocol.Invitation
	for {
		var inv protocol.Invitation
		if err := r.do("get", func(ctx context.Context) (err error) { inv, err = cl.Get(ctx, id); return err }); err == nil {
			if last = inv; want(inv) {
				return inv, true
			}
		}
		if time.Now().After(deadline) || r.ctx.Err() != nil {
			return last, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// glare: two users call each other at the same instant. They must end up
// in one call: one invitation ACCEPTED, the other CANCELED/MERGED into it.
func (r *run) glare(s *invState, us []*user) string {
	a, b := us[0], us[1]
	ids := [2]string{r.localID(s.group+"a", a), r.localID(s.group+"b", b)}
	gc := r.groups.add(ids[0], us)
	r.groups.mu.Lock()
	r.groups.calls[ids[1]] = gc
	r.groups.mu.Unlock()
	defer r.groups.drop(ids[:]...)
	var (
		views [2]protocol.Invitation
		errs  [2]error
		wg    sync.WaitGroup
	)
	start := make(chan struct{})
	for i, pair := range [2][2]*user{{a, b}, {b, a}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, _ := pair[0].client()
			li := cl.CreateLocalInvitation(pair[1].id)
			li.ID, li.Content, li.Timeouts = ids[i], "loadgen glare", r.timeouts(bGlare)
			<-start
			ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
			errs[i] = li.Send(ctx)
			cancel()
			views[i] = li.Invitation()
		}()
	}
	s.sendAt = time.Now()
	close(start)
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		// A send that failed here may have been executed (merging into
		// the other, or ringing): end both, calls included.
		for i, u := range []*user{a, b} {
			r.end(u, ids[i])
		}
		return outSendFailed
	}
	merged := -1
	for i, v := range views {
		if v.Reason == protocol.ReasonMerged && v.MergedInto == ids[1-i] {
			merged = i
		}
	}
	for i, v := range views {
		if merged < 0 && v.Reason == protocol.ReasonMerged {
			// Merged into an older invitation of the partner's that still
			// rang — a send of theirs that failed here but was executed,
			// which nobody tracks: glare's rule at work, not this pair's
			// race. End that call and this pair's other invitation.
			r.st.note("glare: merged into an older invitation (a send that failed but was executed)")
			clI, _ := us[i].client()
			r.settle(v.MergedInto, us[i], func(ctx context.Context) error { return clI.Hangup(ctx, v.MergedInto) })
			r.end(us[1-i], ids[1-i])
			return "GLARE_STALE"
		}
	}
	if merged < 0 && (views[0].Reason == protocol.ReasonBusy || views[1].Reason == protocol.ReasonBusy) {
		// One send saw the other's line claim and no invitation behind it
		// for 72 ms — the other send was stalled (a frozen server, a
		// broker killed mid-send) — and took the line as busy, as it must
		// for an abandoned send (docs/protocol.md §4.6): degraded, not
		// wrong, as long as the two do not both ring. Never in a calm run
		// (TestGroupWorkload wants no GLARE_BUSY).
		r.st.note("glare: a send stalled, the other found the line busy")
		for i, u := range []*user{a, b} {
			r.end(u, ids[i])
		}
		return "GLARE_BUSY"
	}
	if merged < 0 || views[1-merged].Reason == protocol.ReasonMerged || views[1-merged].Reason == protocol.ReasonBusy {
		// What the two invitations became, as the broker says now (the
		// views are the send replies).
		var (
			now [2]protocol.Invitation
			ok  [2]bool
		)
		for i, u := range []*user{a, b} {
			now[i], ok[i] = r.recordAtLeast(u, ids[i], views[i].Revision)
		}
		if ok[0] && ok[1] && !rangTogether(now[0], now[1]) {
			// One send reached the broker only after the other's
			// invitation had ended (a fault delayed it for seconds, and
			// the first timed out meanwhile): two calls one after the
			// other, which glare's rule leaves alone.
			r.st.note("glare: one send arrived after the other's invitation had ended")
			for i, u := range []*user{a, b} {
				r.end(u, ids[i])
			}
			return "GLARE_SEQUENTIAL"
		}
		r.tr.violate(vGlare, "%s: the two sends ended %s/%s (into %q) and %s/%s (into %q); now %s/%s/%s rev %d (callee device %q) and %s/%s/%s rev %d (callee device %q)", s.group,
			views[0].State, views[0].Reason, views[0].MergedInto, views[1].State, views[1].Reason, views[1].MergedInto,
			now[0].State, now[0].CallState, now[0].Reason, now[0].Revision, now[0].CalleeDevice,
			now[1].State, now[1].CallState, now[1].Reason, now[1].Revision, now[1].CalleeDevice)
		for i, u := range []*user{a, b} {
			r.end(u, ids[i])
		}
		return "GLARE_" + string(views[0].State)
	}
	call := ids[1-merged]
	time.Sleep(s.p.hold)
	cl, _ := a.client()
	r.settle(call, a, func(ctx context.Context) error { return cl.Hangup(ctx, call) })
	// The call's own fate is an ordinary call's (under faults an accept
	// can fail ACCEPT_FAILURE): both must see it end, the same way.
	va, vb := r.finalView(s, a, call), r.finalView(s, b, call)
	if va.Live() || vb.Live() || va.State != vb.State || va.Reason != vb.Reason {
		r.tr.violate(vGlare, "%s: the call ends %s/%s for %s, %s/%s for %s", s.group, va.State, va.Reason, a.id, vb.State, vb.Reason, b.id)
	}
	return outGlareMerged
}

// rangTogether reports whether two invitations were live at the same
// moment (by their records' creation and end times; a live one has not
// ended).
func rangTogether(x, y protocol.Invitation) bool {
	end := func(inv protocol.Invitation) int64 {
		if inv.Live() || inv.EndedAt == 0 {
			return math.MaxInt64
		}
		return inv.EndedAt
	}
	return max(x.CreatedAt, y.CreatedAt) < min(end(x), end(y))
}

// end ends caller's invitation id whatever became of it: a cancel, and a
// hangup if it turned into a call meanwhile (accepted, or merged into by
// the callee's own send).
func (r *run) end(caller *user, id string) {
	cl, _ := caller.client()
	err := r.do("settle", func(ctx context.Context) error { return cl.Cancel(ctx, id) })
	switch errCode(err) {
	case string(protocol.CodeAlreadyAccept):
		r.settle(id, caller, func(ctx context.Context) error { return cl.Hangup(ctx, id) })
	case "", string(protocol.CodeAlreadyEnd), string(protocol.CodeNotFound):
	default:
		r.st.note("a scenario could not end its invitation: " + errClass(err))
	}
}

// settle runs a command that ends (or leaves) an invitation; an answer
// that it already ended is fine.
func (r *run) settle(id string, u *user, f func(context.Context) error) {
	err := r.do("settle", f)
	if err != nil && errCode(err) != string(protocol.CodeAlreadyEnd) && errCode(err) != string(protocol.CodeAlreadyAccept) {
		r.st.note("a scenario could not end its invitation: " + errClass(err))
	}
}

// finalView waits (up to 40 s: a lost event is caught up from the
// history at a heartbeat after the device's resync, once the projector
// wrote the entry) for u's device to see invitation id finished, and
// returns what it sees.
func (r *run) finalView(s *invState, u *user, id string) protocol.Invitation {
	return r.deviceSees(s, u, id, "end", 40*time.Second, func(v protocol.Invitation) bool { return !v.Live() })
}

// deviceSees waits, up to within, for u's device to hold a view of
// invitation id that want accepts (what describes it), and returns its
// last view.
func (r *run) deviceSees(s *invState, u *user, id, what string, within time.Duration, want func(protocol.Invitation) bool) protocol.Invitation {
	cl, dev := u.client()
	defer r.tr.waitingSeeing(s, u.id+"'s device to see "+id+" "+what, func() string { return deviceView(cl, dev, id) })()
	deadline := time.Now().Add(within)
	for {
		v, ok := cl.Invitation(id)
		if ok && want(v) || time.Now().After(deadline) || r.ctx.Err() != nil {
			return v
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// seesLeg reports whether v, a callee's view, shows its leg l as ended.
func seesLeg(v protocol.Invitation, l *protocol.Leg) bool {
	return !v.Live() && v.State == l.State && v.Reason == l.Reason
}

// legCatchUp bounds the wait for a callee's device to see its leg as the
// record has it: the Go SDK asks about a view in doubt at its resync and
// every heartbeat for 30 s after the command that failed.
const legCatchUp = 35 * time.Second

// deviceView describes what device dev (client cl) knows of invitation id.
func deviceView(cl *client.Client, dev, id string) string {
	v, ok := cl.Invitation(id)
	if !ok {
		return fmt.Sprintf("device %s: not tracked (connection %s)", dev, cl.ConnectionState())
	}
	return fmt.Sprintf("device %s: %s %s call %s rev %d deadline %s (connection %s)", dev, v.State, v.Reason, v.CallState, v.Revision,
		time.UnixMilli(v.Deadline).UTC().Format("15:04:05.000"), cl.ConnectionState())
}

// checkGroup checks a finished group invitation on every side: each
// device's view finished, agrees with the broker's record, and each
// callee's view with the caller's leg of it; no party got two different
// terminal callbacks. It returns the caller's view.
func (r *run) checkGroup(s *invState, us []*user, gc *groupCall) protocol.Invitation {
	views := make([]protocol.Invitation, len(us))
	var wg sync.WaitGroup
	for i, u := range us { // at the same time: each may wait for a catch-up
		if i > 0 && legBusy(us[0], s.group, u.id) {
			// Refused as busy at the send (chaos: a line still held by the
			// claim of a send that failed, for the claim grace): nothing
			// rang on its devices, whose view of the end would be waited
			// for in vain. Its leg is checked against the record below.
			r.st.note("group: a callee's line was busy")
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); views[i] = r.finalView(s, u, s.group) }()
	}
	wg.Wait()
	var newest uint64
	for _, v := range views {
		newest = max(newest, v.Revision)
	}
	rec, ok := r.recordAtLeast(us[0], s.group, newest)
	if !ok {
		r.st.note("group check: the broker's record could not be read at the devices' revision")
		return rec
	}
	if rec.Live() {
		r.tr.violate(vNoTerminal, "%s: still %s/%s at the end of its scenario", s.group, rec.State, rec.CallState)
	}
	if caller := views[0]; caller.Revision != rec.Revision || caller.State != rec.State {
		r.tr.violate(vGroupViews, "%s: the caller's device sees %s rev %d, the broker %s rev %d", s.group, caller.State, caller.Revision, rec.State, rec.Revision)
	}
	for i, u := range us[1:] {
		l := rec.Leg(u.id)
		if l == nil || l.Reason == protocol.ReasonBusy {
			continue // not invited (the JOIN scenario's late callee, if its invite failed), or never rang
		}
		if v := views[i+1]; !seesLeg(v, l) {
			// A device that saw its leg end may have missed a later
			// revision (a join again whose reply was lost, then the end):
			// the SDK asks after a command with no known outcome, at its
			// resync and heartbeats, so give it that long to catch up.
			v = r.deviceSees(s, u, s.group, fmt.Sprintf("its leg %s %s", l.State, l.Reason), legCatchUp,
				func(v protocol.Invitation) bool { return seesLeg(v, l) })
			if seesLeg(v, l) {
				continue
			}
			cl, dev := u.client()
			r.tr.violate(vGroupViews, "%s: %s's device %s sees %q %q (rev %d; connection %s), the caller's leg of it %s %s",
				s.group, u.id, dev, v.State, v.Reason, v.Revision, cl.ConnectionState(), l.State, l.Reason)
		}
	}
	gc.mu.Lock()
	for u, saw := range gc.saw {
		if rec.Mode == protocol.ModeJoin {
			// A JOIN callee whose leg ended (refused, timed out) may join
			// late: its Accepted follows its first outcome.
			saw = slices.DeleteFunc(slices.Clone(saw), func(o string) bool { return o == outAccepted })
		}
		if len(saw) > 1 {
			r.tr.violate(vGroupTwice, "%s: %s got %v", s.group, u, gc.saw[u])
		}
	}
	gc.mu.Unlock()
	return rec
}
