package broker_test

import (
	"errors"
	"testing"
	"time"

	"github.com/ringer-dev/ringer/broker"
)

func TestConfigValidate(t *testing.T) {
	if err := broker.DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	for name, mutate := range map[string]func(*broker.Config){
		"no queue group":            func(c *broker.Config) { c.QueueGroup = "" },
		"no workers":                func(c *broker.Config) { c.Workers = 0 },
		"negative shed latency":     func(c *broker.Config) { c.ShedLatency = -time.Millisecond },
		"negative cache":            func(c *broker.Config) { c.CacheSize = -1 },
		"claim grace below 3s":      func(c *broker.Config) { c.ClaimGrace = 2 * time.Second },
		"presence ttl below 1s":     func(c *broker.Config) { c.PresenceTTL = 500 * time.Millisecond },
		"offline beyond max":        func(c *broker.Config) { c.Timeouts.Offline = c.MaxTimeout + time.Second },
		"retention below 1m":        func(c *broker.Config) { c.Retention = time.Second },
		"six replicas":              func(c *broker.Config) { c.Replicas = 6 },
		"negative max call":         func(c *broker.Config) { c.Timeouts.MaxDuration = -time.Second },
		"content limit too large":   func(c *broker.Config) { c.MaxContent = 1 << 30 },
		"leader check below 100ms":  func(c *broker.Config) { c.LeaderCheck = time.Millisecond },
		"export retention below 1m": func(c *broker.Config) { c.ExportRetention = time.Second },
		"timer batch beyond 1s":     func(c *broker.Config) { c.TimerBatch = 2 * time.Second },
		"negative timer batch":      func(c *broker.Config) { c.TimerBatch = -time.Millisecond },
	} {
		c := broker.DefaultConfig()
		mutate(&c)
		if err := c.Validate(); !errors.Is(err, broker.ErrInvalidConfig) {
			t.Errorf("%s: Validate() = %v, want ErrInvalidConfig", name, err)
		}
	}
	ok := broker.DefaultConfig()
	ok.ShedLatency, ok.CacheSize, ok.LeaderCheck, ok.TimerBatch = 0, 0, 0, 0 // these features off is valid
	if err := ok.Validate(); err != nil {
		t.Errorf("shedding, cache, leader check and timer batches off: %v", err)
	}
}
