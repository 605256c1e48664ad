package natstest

import (
	"net"
	"sync"
	"testing"
)

// Proxy relays TCP connections to a NATS server and can freeze them: bytes
// stop flowing both ways while every connection stays open, as with a server
// that hangs (a VM stall, docker pause) or a network path gone half-open.
// Connections accepted while frozen are frozen too. It can also hold only
// what the server sends (FreezeToClient: commands arrive, their replies and
// events do not) and sever every connection, losing what it held (Sever).
type Proxy struct {
	ln     net.Listener
	target string

	mu       sync.Mutex
	thawed   chan struct{} // closed while data flows
	toClient chan struct{} // closed while data flows from the server
	conns    []net.Conn
	wg       sync.WaitGroup
}

// NewProxy relays to target (host:port) from a random local port until the
// test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, thawed: make(chan struct{}), toClient: make(chan struct{})}
	close(p.thawed)
	close(p.toClient)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// URL is the proxy's nats:// URL.
func (p *Proxy) URL() string { return "nats://" + p.ln.Addr().String() }

// Freeze stops all data; connections stay open.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.thawed:
		p.thawed = make(chan struct{})
	default:
	}
}

// FreezeToClient stops the data the server sends (replies, events, its
// pings) while the client's still reach it: a command is carried out and
// its client never hears back.
func (p *Proxy) FreezeToClient() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.toClient:
		p.toClient = make(chan struct{})
	default:
	}
}

// Thaw lets data flow again, both ways.
func (p *Proxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ch := range []chan struct{}{p.thawed, p.toClient} {
		select {
		case <-ch:
		default:
			close(ch)
		}
	}
}

// Sever closes every connection relayed so far, losing whatever was held,
// and lets data flow for the connections that follow.
func (p *Proxy) Sever() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	p.Thaw()
}

// wait returns once data may flow in its direction.
func (p *Proxy) wait(toClient bool) {
	p.mu.Lock()
	thawed, down := p.thawed, p.toClient
	p.mu.Unlock()
	<-thawed
	if toClient {
		<-down
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.relay(out, in, false)
		go p.relay(in, out, true)
	}
}

// relay copies src to dst, each chunk only while thawed.
func (p *Proxy) relay(dst, src net.Conn, toClient bool) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.wait(toClient) // frozen: hold the bytes (closing the proxy, or Sever, unblocks)
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break // EOF, a reset, or the proxy closing
		}
	}
	// One side is done: end both, as a TCP relay does.
	dst.Close()
	src.Close()
}

func (p *Proxy) close() {
	p.ln.Close()
	p.Thaw()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
