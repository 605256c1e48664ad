package store_test

import (
	"testing"

	"github.com/ringer-dev/ringer/broker/store"
	"github.com/ringer-dev/ringer/internal/wiretest"
)

// The line record's hand-written encoders write what reflection writes for
// their struct tags.
func TestEncodersWriteWhatReflectionWrites(t *testing.T) {
	t.Run("Line", func(t *testing.T) { wiretest.SameAsReflection[store.Line](t, 3000) })
	t.Run("Claim", func(t *testing.T) { wiretest.SameAsReflection[store.Claim](t, 3000) })
}
