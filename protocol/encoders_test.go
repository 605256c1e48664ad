package protocol_test

import (
	"testing"

	"github.com/ringer-dev/ringer/internal/wiretest"
	"github.com/ringer-dev/ringer/protocol"
)

// The hand-written encoders write what reflection writes for their struct
// tags: the same bytes for every field set or empty.
func TestEncodersWriteWhatReflectionWrites(t *testing.T) {
	t.Run("Invitation", func(t *testing.T) { wiretest.SameAsReflection[protocol.Invitation](t, 3000) })
	t.Run("Leg", func(t *testing.T) { wiretest.SameAsReflection[protocol.Leg](t, 3000) })
	t.Run("Event", func(t *testing.T) { wiretest.SameAsReflection[protocol.Event](t, 3000) })
	t.Run("Request", func(t *testing.T) { wiretest.SameAsReflection[protocol.Request](t, 3000) })
	t.Run("Timeouts", func(t *testing.T) { wiretest.SameAsReflection[protocol.Timeouts](t, 3000) })
	t.Run("Reply", func(t *testing.T) { wiretest.SameAsReflection[protocol.Reply](t, 3000) })
	t.Run("CallRecord", func(t *testing.T) { wiretest.SameAsReflection[protocol.CallRecord](t, 3000) })
}
