package redistest

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// proxyDialTimeout bounds the proxy's connection to its target.
const proxyDialTimeout = 5 * time.Second

// Proxy is a TCP proxy on a free 127.0.0.1 port that forwards each
// connection to a target address, both ways, and can fail like a network:
// Blackhole makes it silent without closing anything, CloseConnections
// drops every connection. It is closed, with every goroutine ended, in
// t.Cleanup. Its methods are safe for concurrent use.
type Proxy struct {
	ln net.Listener
	wg sync.WaitGroup

	mu         sync.Mutex
	target     string // where connections accepted from now on go
	blackholed bool
	closed     bool
	conns      map[*proxyConn]struct{}

	// rate limits what the proxy forwards from the target to clients, in
	// bytes per second; 0 is no limit.
	rate atomic.Int64
}

// Throttle limits what the proxy forwards from the target to its clients to
// bytesPerSecond, in chunks of at most 4 KiB, like a slow link; 0 lifts the
// limit.
func (p *Proxy) Throttle(bytesPerSecond int64) { p.rate.Store(bytesPerSecond) }

// proxyConn is one client connection and, unless it was accepted while the
// proxy was blackholed, its connection to the target.
type proxyConn struct {
	client, server net.Conn // server is nil for a connection accepted in a blackhole
	dead           atomic.Bool
	closeOnce      sync.Once
}

func (c *proxyConn) close() {
	c.closeOnce.Do(func() {
		_ = c.client.Close()
		if c.server != nil {
			_ = c.server.Close()
		}
	})
}

// NewProxy starts a proxy on a free 127.0.0.1 port that forwards to target
// (host:port). The target is dialled once per accepted connection; when it
// cannot be reached the accepted connection is closed.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("redistest: proxy listen: %v", err)
	}
	p := &Proxy{target: target, ln: ln, conns: make(map[*proxyConn]struct{})}
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(p.Close)
	return p
}

// Retarget sends the connections accepted from now on to target; those
// open now stay with the old one, like a failover behind a fixed address
// (a DNS name, a virtual IP, a load balancer) leaves established
// connections where they were.
func (p *Proxy) Retarget(target string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = target
}

// Addr returns the address clients connect to, "127.0.0.1:<port>".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Blackhole stops forwarding in both directions without closing any
// connection: what either side sends is read and discarded, so each peer
// sees silence, not an EOF or a reset. Connections accepted while
// blackholed are accepted and are silent too. The connections open now
// stay silent for good, even after Resume, since their byte streams have
// lost data; close them with CloseConnections.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackholed = true
	for c := range p.conns {
		c.dead.Store(true)
	}
}

// Resume ends a Blackhole for new connections: those accepted from now on
// are forwarded again.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.blackholed = false
}

// CloseConnections closes every current connection, both the client's
// and the target's side. The proxy keeps accepting new ones.
func (p *Proxy) CloseConnections() {
	p.mu.Lock()
	conns := p.conns
	p.conns = make(map[*proxyConn]struct{})
	p.mu.Unlock()
	for c := range conns {
		c.close()
	}
}

// Conns returns the number of connections the proxy currently holds.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops the proxy, closes every connection and waits until all its
// goroutines have ended. It is idempotent; NewProxy registers it with
// t.Cleanup.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.ln.Close()
	p.CloseConnections()
	p.wg.Wait()
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a transient accept error; a closed listener ends the loop
		}
		p.wg.Add(1)
		go p.handle(client)
	}
}

// handle connects an accepted connection to the target and copies both
// ways until either side closes.
func (p *Proxy) handle(client net.Conn) {
	defer p.wg.Done()
	c := &proxyConn{client: client}

	p.mu.Lock()
	blackholed, target := p.blackholed, p.target
	p.mu.Unlock()
	if blackholed {
		c.dead.Store(true)
	} else {
		server, err := net.DialTimeout("tcp", target, proxyDialTimeout)
		if err != nil {
			_ = client.Close()
			return
		}
		c.server = server
	}

	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		c.close()
		return
	}
	if p.blackholed {
		c.dead.Store(true) // Blackhole came while the target was dialled
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()

	defer func() {
		c.close()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()

	if c.server == nil {
		pipe(c, client, nil, nil)
		return
	}
	done := make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(done)
		pipe(c, c.server, client, &p.rate)
		c.close()
	}()
	pipe(c, client, c.server, nil)
	c.close()
	<-done
}

// pipe copies from src to dst until src fails, discarding what it reads
// once c is dead (or always, when dst is nil), at most *rate bytes a second
// when rate is not nil and not 0.
func pipe(c *proxyConn, src io.Reader, dst io.Writer, rate *atomic.Int64) {
	buf := make([]byte, 32*1024)
	for {
		chunk := buf
		var limit int64
		if rate != nil {
			if limit = rate.Load(); limit > 0 {
				chunk = buf[:4096]
			}
		}
		n, err := src.Read(chunk)
		if limit > 0 && n > 0 {
			time.Sleep(time.Duration(int64(n) * int64(time.Second) / limit))
		}
		if n > 0 && dst != nil && !c.dead.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
