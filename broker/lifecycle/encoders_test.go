package lifecycle_test

import (
	"testing"

	"github.com/ringer-dev/ringer/broker/lifecycle"
	"github.com/ringer-dev/ringer/internal/wiretest"
)

// The stored record's hand-written encoders write what reflection writes
// for their struct tags (the inlined invitation's fields first).
func TestEncodersWriteWhatReflectionWrites(t *testing.T) {
	t.Run("Record", func(t *testing.T) { wiretest.SameAsReflection[lifecycle.Record](t, 3000) })
	t.Run("Timeouts", func(t *testing.T) { wiretest.SameAsReflection[lifecycle.Timeouts](t, 3000) })
	t.Run("Step", func(t *testing.T) { wiretest.SameAsReflection[lifecycle.Step](t, 3000) })
}
