package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/ringer-dev/ringer/auth"
	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// command is one decoded request, with who sent it.
type command struct {
	user string // from the subject, which NATS permissions bind to the authenticated user
	verb string
	req  *protocol.Request
}

// logged adds the command's identity to a log event (a nil event, for a
// level that is off, costs nothing: no logger is built per command).
func (c *command) logged(e *zerolog.Event) *zerolog.Event {
	return e.Str("user", c.user).Str("device", c.req.Device).Str("verb", c.verb)
}

// job is one command waiting for a worker.
type job struct {
	m       *nats.Msg
	arrived time.Time
	// The subject parsed once (subjects.ParseCommand): the acting user
	// ("" if the subject names none) and verb, or why it is no command.
	user, verb string
	perr       error
	// sequenced: the user's command in hand (sequencer), whose worker
	// serves the user's commands that wait behind it next.
	sequenced bool
}

// onCommand runs on the subscription's goroutine: it only hands the message
// to one of the Workers command goroutines, waiting while all are busy — or,
// when the broker's commands or its projector have a standing queue
// (overload), refuses a new invitation at once (shed).
func (b *Broker) onCommand(m *nats.Msg) {
	arrived := time.Now()
	j := job{m: m, arrived: arrived}
	j.user, j.verb, j.perr = subjects.ParseCommand(m.Subject)
	// shedding revises its verdict as time passes: asked on every command.
	if b.commandQueue.shedding(arrived) || b.projectorQueue.shedding(arrived) {
		if j.perr == nil && j.verb == subjects.VerbSend {
			b.shed(m, j.user)
			return
		}
	}
	b.inflight.Add(1)
	if j.perr == nil && sequenced(j.verb) && !b.seq.admit(j.user, &j) {
		return // waits behind the user's command in hand
	}
	b.jobs <- j
}

// startWorkers starts the goroutines that serve commands. They live as long
// as the broker: a goroutine per command would start on a small stack and
// grow it by copying on every command (a JetStream round trip is deep
// enough to need several), which cost a tenth of the process's CPU.
func (b *Broker) startWorkers() {
	b.jobs, b.seq = make(chan job), newSequencer()
	for range b.cfg.Workers {
		b.workers.Add(1)
		go func() {
			defer b.workers.Done()
			for j := range b.jobs {
				for {
					b.serve(&j)
					b.commandQueue.done(time.Since(j.arrived))
					b.inflight.Done()
					if !j.sequenced {
						break
					}
					next, ok := b.seq.next(j.user)
					if !ok {
						break
					}
					// Its wait behind its user's command is not the
					// broker's queue (overload).
					j, j.sequenced, j.arrived = next, true, time.Now()
				}
			}
		}()
	}
}

// stopWorkers ends the command goroutines once no command can arrive.
func (b *Broker) stopWorkers() {
	if b.jobs != nil {
		close(b.jobs)
		b.workers.Wait()
		b.jobs = nil
	}
}

// shed refuses a send because the broker is overloaded (see overload).
// New invitations are what an overloaded broker drops first: the commands
// of invitations already ringing or talking still run, so those finish and
// free capacity, and the sender learns at once that it may retry instead
// of waiting in a queue that only grows.
func (b *Broker) shed(m *nats.Msg, user string) {
	dest, ok := b.replyTo(m, user)
	if !ok {
		return
	}
	b.metrics.shed()
	if dest == "" {
		return
	}
	rep := protocol.Reply{Error: protocol.Errorf(protocol.CodeUnavailable, "broker overloaded: retry the send in a moment")}
	if err := protocol.MustEncode(&rep, func(data []byte) error { return b.nc.Publish(dest, data) }); err != nil {
		b.log.Debug().Err(err).Msg("shed reply not sent")
	}
}

// replyTo decides where the reply to command m of user goes: the user's own
// reply subject that the ReplyHeader names, else the message's reply
// subject — unless OwnReplies (secure mode), where a reply subject the
// broker cannot check is refused: no reply (it could be anyone's subject:
// in secure mode the server rewrites a cross-account reply, so the broker
// cannot see where it leads), not executed, counted and logged at most once
// per minute. "" with ok: a publish that wants no reply.
func (b *Broker) replyTo(m *nats.Msg, user string) (dest string, ok bool) {
	if token := m.Header.Get(subjects.ReplyHeader); token != "" {
		dest, err := subjects.UserReply(user, token)
		if err != nil {
			b.refuseReply(m, fmt.Sprintf("bad %s header: %v", subjects.ReplyHeader, err))
			return "", false
		}
		return dest, true
	}
	if m.Reply != "" && b.cfg.OwnReplies {
		b.refuseReply(m, "a reply subject that is not the user's own (send the "+subjects.ReplyHeader+" header)")
		return "", false
	}
	return m.Reply, true
}

// refuseReply counts a command refused for where it wanted its reply, and
// logs it at most once per minute.
func (b *Broker) refuseReply(m *nats.Msg, why string) {
	b.metrics.repliesRefused.Inc()
	now := time.Now().UnixNano()
	if last := b.refusedLogAt.Load(); now-last >= int64(time.Minute) && b.refusedLogAt.CompareAndSwap(last, now) {
		b.log.Warn().Str("subject", m.Subject).Str("reply", m.Reply).Str("why", why).
			Msg("command refused without a reply: brokers reply only to the acting user's own subjects (counted in ringer_replies_refused_total; logged once a minute)")
	}
}

// serve answers one request. Every path replies exactly once: a result or a
// typed error. A panic is a bug; it is logged and answered with INTERNAL.
func (b *Broker) serve(j *job) {
	start := time.Now()
	verb := "unknown"
	var rep protocol.Reply
	m, user, perr := j.m, j.user, j.perr
	dest, ok := b.replyTo(m, user)
	if !ok {
		return // refused without a reply, and not executed
	}
	defer func() {
		if p := recover(); p != nil {
			b.log.Error().Interface("panic", p).Str("subject", m.Subject).Msg("command handler panicked")
			rep = protocol.Reply{Error: protocol.Errorf(protocol.CodeInternal, "internal error")}
		}
		result := "ok"
		if rep.Error != nil {
			result = string(rep.Error.Code)
		}
		b.metrics.commandDone(verb, result, time.Since(start))
		if dest == "" {
			return // a publish, not a request: nobody to answer
		}
		if err := protocol.MustEncode(&rep, func(data []byte) error { return b.nc.Publish(dest, data) }); err != nil {
			b.log.Debug().Err(err).Str("verb", verb).Msg("reply not sent")
		}
	}()

	if perr != nil {
		rep.Error = protocol.Errorf(protocol.CodeInvalidArgument, "%v", perr)
		return
	}
	verb = j.verb
	if b.cfg.RequireRequestInfo {
		if who, ok := auth.RequestUser(m.Header); !ok || who != user {
			b.log.Warn().Str("subject", m.Subject).Str("stamped_user", who).Msg("command refused: Nats-Request-Info does not name the subject's user")
			rep.Error = protocol.Errorf(protocol.CodeForbidden, "the sender is not %s", user)
			return
		}
	}
	// Before decoding: a flood costs a map lookup per command, not a decode
	// of up to 32 KiB.
	if verb == subjects.VerbSend && !b.sends.allow(user, time.Now()) {
		rep.Error = protocol.Errorf(protocol.CodeRateLimited, "%s sends more than %d invitations at once or %g per second", user, b.cfg.SendBurst, b.cfg.SendRate)
		return
	}
	if verb != subjects.VerbSend && !b.commands.allow(user, time.Now()) {
		rep.Error = protocol.Errorf(protocol.CodeRateLimited, "%s makes more than %d commands at once or %g per second", user, b.cfg.CommandBurst, b.cfg.CommandRate)
		return
	}
	req, err := protocol.DecodeRequest(m.Data)
	if err != nil {
		rep.Error = asWireError(err)
		return
	}
	if err := subjects.ValidateID(req.Device); err != nil {
		rep.Error = protocol.Errorf(protocol.CodeInvalidArgument, "device: %v", err)
		return
	}
	if now := b.now().UnixMilli(); req.Deadline != 0 && now > req.Deadline {
		// Its client has given up on it: executing it now would be a ghost
		// (an invitation its caller was told had failed).
		rep.Error = protocol.Errorf(protocol.CodeDeadlineExceeded, "the command arrived %d ms after its deadline: not executed", now-req.Deadline)
		return
	}
	c := &command{user: user, verb: verb, req: req}
	ctx, cancel := b.opContext()
	defer cancel()
	rep, err = b.handle(ctx, c)
	if err != nil {
		if errors.Is(err, store.ErrFull) {
			b.storeFull(err)
		}
		rep = protocol.Reply{Error: asWireError(err)}
		if rep.Error.Code == protocol.CodeInternal || rep.Error.Code == protocol.CodeUnavailable {
			b.metrics.kvError("command")
			c.logged(b.log.Error()).Err(err).Str("id", req.ID).Msg("command failed")
		}
	}
}

func (b *Broker) handle(ctx context.Context, c *command) (protocol.Reply, error) {
	switch c.verb {
	case subjects.VerbLogin:
		return b.login(ctx, c)
	case subjects.VerbHeartbeat:
		return b.heartbeat(ctx, c)
	case subjects.VerbLogout:
		return b.logout(ctx, c)
	case subjects.VerbSend:
		if len(c.req.Callees) > 0 || c.req.Mode != protocol.ModeOne {
			return b.sendGroup(ctx, c)
		}
		return b.send(ctx, c)
	case subjects.VerbInvite:
		return b.invite(ctx, c)
	case subjects.VerbSync:
		return b.sync(ctx, c)
	case subjects.VerbBusy:
		return b.setBusy(ctx, c)
	case subjects.VerbGet:
		return b.get(ctx, c)
	case subjects.VerbHistory:
		return b.history(ctx, c)
	case subjects.VerbRegister:
		return b.register(ctx, c)
	case subjects.VerbUnregister:
		return b.unregister(ctx, c)
	case subjects.VerbBlock:
		return b.block(ctx, c)
	case subjects.VerbUnblock:
		return b.unblock(ctx, c)
	case subjects.VerbAck:
		return b.act(ctx, c, lifecycle.Ack)
	case subjects.VerbAccept:
		return b.act(ctx, c, lifecycle.Accept)
	case subjects.VerbRefuse:
		return b.act(ctx, c, lifecycle.Refuse)
	case subjects.VerbCancel:
		return b.act(ctx, c, lifecycle.Cancel)
	case subjects.VerbAckAccept:
		return b.act(ctx, c, lifecycle.AckAccept)
	case subjects.VerbHangup:
		return b.act(ctx, c, lifecycle.Hangup)
	}
	return protocol.Reply{}, protocol.Errorf(protocol.CodeInvalidArgument, "unknown verb %q", c.verb)
}

// asWireError turns any error into the typed error a client receives:
// protocol errors pass through, store trouble is UNAVAILABLE, the rest INTERNAL.
func asWireError(err error) *protocol.Error {
	var pe *protocol.Error
	switch {
	case errors.As(err, &pe):
		return pe
	case errors.Is(err, store.ErrFull):
		return protocol.Errorf(protocol.CodeResourceExhausted, "the store is full, retry later: %v", err)
	case errors.Is(err, store.ErrConflict):
		return protocol.Errorf(protocol.CodeUnavailable, "too much contention on this invitation; retry")
	case store.Transient(err):
		return protocol.Errorf(protocol.CodeUnavailable, "store unavailable, retry: %v", err)
	}
	return protocol.Errorf(protocol.CodeInternal, "%v", err)
}

// withInvitation adds the invitation's identity to a log event.
func withInvitation(e *zerolog.Event, r *lifecycle.Record) *zerolog.Event {
	return e.Str("id", r.ID).Str("caller", r.Caller).Str("callee", r.Callee)
}

// legsOf adds a group record's legs to a debug line, one "user:STATE/REASON"
// each: which callee a transition moved is otherwise not in the log.
func legsOf(e *zerolog.Event, r *lifecycle.Record) *zerolog.Event {
	if !r.Group() {
		return e
	}
	legs := make([]string, len(r.Legs))
	for i, l := range r.Legs {
		legs[i] = l.User + ":" + string(l.State) + "/" + string(l.Reason)
	}
	return e.Strs("legs", legs)
}

// view is the wire view of a record at its revision.
func view(r lifecycle.Record) *protocol.Invitation {
	inv := r.Invitation
	return &inv
}

// now is the broker's clock for decisions (deadlines, claim ages);
// time.Now unless a test replaces clock.
func (b *Broker) now() time.Time { return b.clock() }
