package redispubsub

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/alkdev/watermill-redispubsub/internal/hashslot"
)

// serve runs the writer and the health check, and reads the socket until it
// fails, never blocking on consumers; then it drops the session. It returns
// why the socket failed, and whether the session had been live. It sets no
// read deadline (one that expired in the middle of a large message would
// desynchronise the stream); the health check closes a silent socket
// instead.
func (c *connection) serve(sess *session) (cause error, wasLive bool) {
	var helpers sync.WaitGroup
	if sess.probe != nil {
		helpers.Add(1)
		go func() {
			defer helpers.Done()
			c.runProbes(sess)
		}()
	}
	helpers.Add(2)
	go func() {
		defer helpers.Done()
		c.write(sess)
	}()
	go func() {
		defer helpers.Done()
		c.watch(sess)
	}()
	cause = c.read(sess)
	c.mu.Lock()
	if sess.broken != nil {
		cause = sess.broken
	}
	c.mu.Unlock()
	if c.ctx.Err() != nil {
		cause = c.ctx.Err()
	}
	wasLive = c.disconnect(sess) // stops the writer, the health check and the probes
	if wasLive {
		c.s.reportDisconnect(c, cause)
	}
	helpers.Wait()
	return cause, wasLive
}

// read reads replies until the socket fails, and hands each to its
// handler.
func (c *connection) read(sess *session) error {
	rr := newRESPReader(countingReader{sess.conn, &c.bytesRead}, c.s.config.MaxMessageBytes)
	var f frame
	for {
		if err := rr.readFrame(&f); err != nil {
			return err
		}
		switch f.kind {
		case frameMessage, framePMessage:
			if !c.consumeProbe(sess, &f) {
				c.route(&f)
			}
		case frameSubscribe, frameUnsubscribe:
			c.confirm(sess, &f)
		case framePong:
			c.pong(sess)
		case frameError:
			c.errorReply(sess, string(f.text))
		default:
			c.logger.Debug("Redis Pub/Sub push ignored", watermill.LogFields{"kind": string(f.text)})
		}
	}
}

// countingReader counts the bytes read from a socket.
type countingReader struct {
	r io.Reader
	n *atomic.Uint64
}

func (cr countingReader) Read(p []byte) (int, error) {
	n, err := cr.r.Read(p)
	if n > 0 {
		cr.n.Add(uint64(n))
	}
	return n, err
}

// write writes the pending commands whenever there are some, all in one
// write.
func (c *connection) write(sess *session) {
	var buf []byte
	sharded := c.s.config.Sharded
	for {
		select {
		case <-sess.done:
			return
		case <-sess.wake:
		}
		cmds := c.take(sess)
		if len(cmds) == 0 {
			continue
		}
		buf = buf[:0]
		for _, cmd := range cmds {
			buf = appendCommand(buf, cmd.redisName(sharded), cmd.names)
		}
		if _, err := sess.conn.Write(buf); err != nil {
			c.mu.Lock()
			c.fault(sess, fmt.Errorf("writing %s: %w", cmds[0].redisName(sharded), err))
			c.mu.Unlock()
			return
		}
		if cap(buf) > 1<<20 {
			buf = nil // a resubscription's buffer is not kept
		}
	}
}

// healthChecks is the number of checks per HealthCheckInterval.
const healthChecks = 4

// watch checks the socket's health healthChecks times per health-check
// interval: after one check without a byte read it has a PING sent; after
// healthChecks in a row it drops the socket. So a socket that stopped
// answering is dropped after between 1 and 1 + 1/healthChecks
// HealthCheckInterval of silence, never sooner, and a PONG has at least
// three quarters of it to come back. Any reply counts, an error reply to
// the PING (an ACL that refuses PING) too. It runs apart from the writer,
// so that a command blocked on a socket that takes no more bytes does not
// stop it.
func (c *connection) watch(sess *session) {
	ticker := time.NewTicker(c.s.config.HealthCheckInterval / healthChecks)
	defer ticker.Stop()
	seen, silent := c.bytesRead.Load(), 0
	for {
		select {
		case <-sess.done:
			return
		case <-ticker.C:
		}
		if now := c.bytesRead.Load(); now != seen {
			seen, silent = now, 0
			continue
		}
		silent++
		c.mu.Lock()
		switch {
		case silent >= healthChecks:
			c.fault(sess, errHealthCheck)
		case silent == 1 && c.sess == sess:
			sess.pending.ping = true
			sess.signal()
		}
		c.mu.Unlock()
		if silent >= healthChecks {
			return
		}
	}
}

// take turns the pending changes into commands and records them as sent,
// in the order they are to be written. Called by the writer.
func (c *connection) take(sess *session) []*command {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := &sess.pending
	if c.sess != sess || !c.usable() || p.empty() {
		return nil
	}
	var cmds []*command
	// The command being filled per kind (SUBSCRIBE, PSUBSCRIBE, UNSUBSCRIBE,
	// PUNSUBSCRIBE) and, in sharded mode, per hash slot: Redis refuses an
	// SSUBSCRIBE or SUNSUBSCRIBE whose channels are in different slots.
	type batchKey struct{ kind, slot int }
	batch := make(map[batchKey]*command)
	sharded := c.s.config.Sharded
	for _, key := range p.order {
		subscribe, ok := p.ops[key]
		if !ok {
			continue // cancelled, or taken already
		}
		delete(p.ops, key)
		bk := batchKey{}
		if key.pattern {
			bk.kind++
		}
		if !subscribe {
			bk.kind += 2
		}
		if sharded {
			bk.slot = hashslot.Of(key.name)
		}
		cmd := batch[bk]
		alone := p.alone[key]
		// The probe channel may exceed the bound by one: 5,000 topics
		// still take 5 SUBSCRIBEs.
		full := cmd != nil && len(cmd.names) >= maxNamesPerCommand && !isProbe(sess, key.name, key.pattern)
		if cmd == nil || full || alone {
			cmd = &command{kind: cmdUnsubscribe, pattern: key.pattern}
			if subscribe {
				cmd.kind = cmdSubscribe
			}
			cmds = append(cmds, cmd)
			if alone {
				delete(p.alone, key)
			} else {
				batch[bk] = cmd
			}
		}
		cmd.names = append(cmd.names, key.name)
		if !subscribe {
			continue
		}
		st := c.table(key.pattern)[key.name]
		var starters []*subscription
		if st != nil {
			starters = st.starting
			st.starting = nil
			for _, sn := range starters {
				sn.phase, sn.awaits = phaseWaiting, cmd
			}
			st.waiting += len(starters)
		}
		cmd.starters = append(cmd.starters, starters)
		cmd.resub = append(cmd.resub, p.resub[key])
		delete(p.resub, key)
	}
	p.order = p.order[:0]
	if len(p.joiners) > 0 || p.ping {
		ping := &command{kind: cmdPing, joiners: p.joiners}
		for _, sn := range ping.joiners {
			if sn.phase == phaseWaiting && sn.awaits == nil {
				sn.awaits = ping
			}
		}
		cmds = append(cmds, ping)
		p.joiners, p.ping = nil, false
	}
	sess.sent = append(sess.sent, cmds...)
	return cmds
}
