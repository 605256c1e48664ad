package client

import "time"

// Hooks for the external tests (package client_test) of what is internal.

// Doubt returns when the view of invitation id stops being in doubt once a
// get succeeds (unix ms; 0: not in doubt).
func (c *Client) Doubt(id string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.tracked[id]; t != nil {
		return t.doubt
	}
	return 0
}

// SetDoubt puts the view of invitation id in doubt until at.
func (c *Client) SetDoubt(id string, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.tracked[id]; t != nil {
		t.doubt = at.UnixMilli()
	}
}

// Reconcile runs what every heartbeat runs.
var Reconcile = (*Client).reconcile
