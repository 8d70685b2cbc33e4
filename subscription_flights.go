package redispubsub

import "github.com/ThreeDotsLabs/watermill/message"

// flights is the state of a subscription's concurrent delivery
// (SubscriberConfig.MaxInFlight above 1): up to MaxInFlight messages handed
// out before their Acks, one after another per key when OrderingKey is set.
// Guarded by the subscription's mu.
type flights struct {
	kicked chan struct{} // capacity 1: something changed that the dispatcher may act on
	n      int           // messages in flight: handed out, or being, and not answered
	parked int           // messages waiting for their key's turn
	// keys holds the keys with a message in flight and, for each, the
	// messages that wait for it, in arrival order.
	keys map[string][]*flight
}

// flight is one message of a concurrent delivery.
type flight struct {
	msg    *message.Message
	shared bool
	key    string // "" : no order to keep
	size   int64  // counted in the Subscriber's budget until answered
}

func (f *flights) kick() {
	select {
	case f.kicked <- struct{}{}:
	default:
	}
}

// runConcurrently is the delivery goroutine of a subscription with
// MaxInFlight above 1. It takes the queued messages in order and hands each
// out, in that order, while fewer than MaxInFlight are in flight (a
// goroutine per message in flight waits for its answer); a message
// whose key has one in flight waits for it, outside the queue (at most
// MaxInFlight such messages: past that the dispatcher waits too). Messages
// in flight and waiting count in the Subscriber's budget (carried; they
// cannot be dropped). It returns once nothing is queued, waiting or in
// flight; when the subscription ends, once every flight returned.
func (sn *subscription) runConcurrently() {
	limit := sn.sub.config.MaxInFlight
	f := &flights{kicked: make(chan struct{}, 1), keys: make(map[string][]*flight)}
	sn.mu.Lock()
	sn.flights = f
	for {
		ending := sn.ending.Load()
		switch {
		case ending:
			sn.dropWaiting(f)
			if f.n == 0 {
				sn.flights, sn.running = nil, false
				finish := !sn.finishing
				sn.finishing = true
				sn.mu.Unlock()
				if finish {
					sn.finish()
				}
				return
			}
		case f.n < limit && f.parked < limit && sn.queue.len() > 0:
			in := sn.take(sn.queue.popFront())
			sn.sub.budget.carry(in.size)
			sn.mu.Unlock()
			fl := sn.prepare(in)
			sn.mu.Lock()
			if fl == nil {
				sn.sub.budget.carry(-in.size)
				continue
			}
			if sn.admit(f, fl) {
				// Handed out here, in the queue's order; a goroutine of
				// its own waits for the answer.
				sn.mu.Unlock()
				sn.handOut(f, fl)
				sn.mu.Lock()
			}
			continue
		case f.n == 0 && f.parked == 0 && sn.queue.len() == 0:
			sn.flights, sn.running = nil, false
			sn.mu.Unlock()
			return
		}
		sn.mu.Unlock()
		if ending {
			<-f.kicked // a flight returned
		} else {
			select {
			case <-f.kicked:
			case <-sn.stop:
			}
		}
		sn.mu.Lock()
	}
}

// prepare decodes in and reads its key; nil when it cannot be decoded
// (counted and logged by decode).
func (sn *subscription) prepare(in *incoming) *flight {
	msg, err := in.decode(sn.sub)
	if err != nil {
		return nil
	}
	fl := &flight{msg: msg, shared: in.shared, size: in.size}
	if key := sn.sub.config.OrderingKey; key != nil {
		fl.key = key(msg)
	}
	return fl
}

// admit takes fl into flight, or has it wait for the flight of its key,
// and reports which. Called with mu held.
func (sn *subscription) admit(f *flights, fl *flight) bool {
	if fl.key != "" {
		if waiting, busy := f.keys[fl.key]; busy {
			f.keys[fl.key] = append(waiting, fl)
			f.parked++
			return false
		}
		f.keys[fl.key] = nil
	}
	f.n++
	return true
}

// handOut sends fl's first attempt to the consumer and starts the goroutine
// that waits for its answer. When the subscription ends first, the flight
// ends here.
func (sn *subscription) handOut(f *flights, fl *flight) {
	a := sn.newAttempt(fl.msg, fl.shared)
	if sn.send(a.msg) {
		go sn.fly(f, fl, &a)
		return
	}
	a.cancel()
	sn.fly(f, fl, nil) // sees the end at once, and counts the message
}

// fly delivers fl (redelivering it after each Nack; handed is its first
// attempt, when handed out already) and then the messages that waited for
// its key, one after another, until none waits or the subscription ends.
func (sn *subscription) fly(f *flights, fl *flight, handed *attempt) {
	for fl != nil {
		ok := sn.deliver(fl.msg, fl.shared, handed)
		handed = nil
		if !ok {
			sn.markEnding() // the consumer's context ended: AfterFunc ends it too
		}
		sn.mu.Lock()
		sn.sub.budget.carry(-fl.size)
		var next *flight
		if fl.key != "" && !sn.ending.Load() {
			if waiting := f.keys[fl.key]; len(waiting) > 0 {
				next, f.keys[fl.key] = waiting[0], waiting[1:]
				f.parked--
			} else {
				delete(f.keys, fl.key)
			}
		}
		if next == nil {
			f.n--
		}
		// A flight ended, or a waiting message took it over: either way
		// the dispatcher, which may have stopped at MaxInFlight flights or
		// waiting messages, may go on.
		f.kick()
		sn.mu.Unlock()
		fl = next
	}
}

// dropWaiting discards the messages waiting for their key's turn: the
// subscription ends. Called with mu held.
func (sn *subscription) dropWaiting(f *flights) {
	if f.parked == 0 {
		return
	}
	for key, waiting := range f.keys {
		for _, fl := range waiting {
			sn.sub.budget.carry(-fl.size)
		}
		f.keys[key] = nil
	}
	sn.sub.stats.discarded.Add(uint64(f.parked))
	f.parked = 0
}
