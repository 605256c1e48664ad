package main

import (
	"fmt"
	"io"
	"sync"
)

// console serialises what the CLI prints. News from callbacks that comes
// while a command runs waits and is printed after the command's own
// output ("invitation X sent" before "bob refused X"), and the prompt is
// printed once, when the CLI is ready for the next command.
type console struct {
	mu      sync.Mutex
	w       io.Writer
	busy    bool
	pending []string
}

// news prints one line of news (or holds it while a command runs).
func (c *console) news(format string, args ...any) {
	line := fmt.Sprintf("* "+format+"\n", args...)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.busy {
		c.pending = append(c.pending, line)
		return
	}
	fmt.Fprint(c.w, "\r"+line+"> ")
}

// Write is a command's own output.
func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.w.Write(p)
}

// begin marks a command running: news waits.
func (c *console) begin() {
	c.mu.Lock()
	c.busy = true
	c.mu.Unlock()
}

// end prints the news that waited, then the prompt.
func (c *console) end() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.busy = false
	for _, l := range c.pending {
		fmt.Fprint(c.w, l)
	}
	c.pending = nil
	fmt.Fprint(c.w, "> ")
}
