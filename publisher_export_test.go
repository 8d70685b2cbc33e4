package redispubsub

// PublisherQueued returns the number of Publish calls waiting in p's
// queues (not those on the wire), for the tests of package
// redispubsub_test.
func PublisherQueued(p *Publisher) int { return p.queued() }

// queued returns the number of calls waiting in the Publisher's queues.
func (p *Publisher) queued() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, q := range p.queues {
		n += len(q.pending)
	}
	return n
}
