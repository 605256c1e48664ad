package broker_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/internal/natstest"
	"github.com/ringer-dev/ringer/protocol"
	"github.com/ringer-dev/ringer/subjects"
)

// watchErrorReplies signals every error reply, to any client on url, whose
// message contains substr: how a test sees a broker refuse a command that a
// client sent by itself (an automatic ack, a resync).
func watchErrorReplies(t *testing.T, url, substr string) <-chan struct{} {
	t.Helper()
	nc := natstest.Connect(t, url)
	seen := make(chan struct{}, 16)
	watch := func(m *nats.Msg) {
		if rep, err := protocol.DecodeReply(m.Data); err == nil && rep.Error != nil && strings.Contains(rep.Error.Message, substr) {
			select {
			case seen <- struct{}{}:
			default:
			}
		}
	}
	// The SDK's replies come on the users' own reply subjects; raw
	// requests' on inboxes.
	for _, subj := range []string{subjects.Prefix + ".user.*.reply.>", nats.InboxPrefix + ">"} {
		if _, err := nc.Subscribe(subj, watch); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return seen
}

// awaitStored waits until the stream leader has invitation id in state.
func awaitStored(t *testing.T, st *store.Store, id string, state protocol.State, within time.Duration) {
	t.Helper()
	natstest.Eventually(t, within, func() error {
		rec, _, err := st.GetInvitationFresh(context.Background(), id)
		if err != nil {
			return err
		}
		if rec.State != state {
			return fmt.Errorf("invitation %s is %s/%s, want %s", id, rec.State, rec.Reason, state)
		}
		return nil
	})
}
