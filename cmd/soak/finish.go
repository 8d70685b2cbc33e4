//go:build linux

package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

func (s *soak) printProgress(start time.Time, mem *memory) {
	var published, errs int64
	for _, p := range s.pubs {
		p.mu.Lock()
		published += p.okMsgs
		errs += p.errs
		p.mu.Unlock()
	}
	var delivered int64
	var st redispubsub.SubscriberStats
	for _, sb := range s.subs {
		for _, sn := range sb.subs {
			delivered += sn.delivered.Load()
		}
		x := sb.sub.Stats()
		st.Reconnects += x.Reconnects
		st.Gaps += x.Gaps
		st.Dropped += x.Dropped
	}
	el := time.Since(start).Seconds()
	fmt.Printf("soak: %5.0fs published %d (%.0f/s), publish errors %d, delivered %d (%.0f/s), server kills %d, client kills %d, reconnects %d, gaps %d, drops %d, RSS %s\n",
		el, published, float64(published)/el, errs, delivered, float64(delivered)/el,
		s.kills.Load(), s.clientKill.Load(), st.Reconnects, st.Gaps, st.Dropped, kib(mem.rss()))
}

// finish publishes the markers, waits for them, checks the identities,
// prints the summary and closes everything. It reports whether all held.
func (s *soak) finish(flowed time.Duration, mem *memory) bool {
	ok := true
	endStart := time.Now()
	deadline := endStart.Add(s.c.endTimeout)
	// Every Subscriber has its subscriptions in place again.
	want := int64(len(s.subs))
	for {
		if s.subscribedEverywhere(want) {
			break
		}
		if time.Now().After(deadline) {
			fmt.Println("soak: FAIL: the Subscribers did not resubscribe everything before the end timeout")
			s.closeAll()
			return false
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
	// Markers, until every subscription has every one.
	wantMarkers := func(sn *subscription) int { return len(s.pubs) * len(sn.topics) }
	for _, p := range s.pubs {
		for t := range s.topics {
			p.mu.Lock()
			n := p.next[t]
			p.next[t]++
			p.mu.Unlock()
			if err := s.publishOne(p, t, payload{P: p.index, T: t, N: n, M: true}, 10*time.Second); err != nil {
				fmt.Printf("soak: FAIL: marker of publisher %d on %s: %v\n", p.index, s.topics[t], err)
				ok = false
			}
		}
	}
	for _, sb := range s.subs {
		for _, sn := range sb.subs {
			for {
				sn.mu.Lock()
				got := sn.markers
				sn.mu.Unlock()
				if got >= wantMarkers(sn) {
					break
				}
				if time.Now().After(deadline) {
					fmt.Printf("soak: FAIL: %s got %d of %d markers before the end timeout\n", sn.name, got, wantMarkers(sn))
					ok = false
					break
				}
				time.Sleep(10 * time.Millisecond) // poll interval
			}
		}
	}

	// Stats before Close, which discards what is still queued.
	var published, pubErrs int64
	var ps redispubsub.PublisherStats
	for _, p := range s.pubs {
		p.mu.Lock()
		published += p.okMsgs
		pubErrs += p.errs
		p.mu.Unlock()
		x := p.pub.Stats()
		ps.Published += x.Published
		ps.Failed += x.Failed
		ps.NoSubscribers += x.NoSubscribers
	}
	var total redispubsub.SubscriberStats
	var delivered, duplicates, unparsable int64
	if s.c.recover {
		fmt.Println("soak: accounting per Subscriber (recover): numbers not received whose Publish succeeded, over its subscriptions and streams = 0; Unrecovered = 0, HistoryLost = 0")
	} else {
		fmt.Println("soak: accounting per Subscriber: Σ (last number + 1 − distinct received) over its subscriptions and streams = Gaps + Dropped")
	}
	for _, sb := range s.subs {
		st := sb.sub.Stats()
		var missing int64
		var parts []string
		for _, sn := range sb.subs {
			sn.mu.Lock()
			var m, distinct int64
			for st, bs := range sn.streams {
				last := bs.last()
				distinct += int64(bs.count)
				if !s.c.recover {
					m += int64(last+1) - int64(bs.count)
					continue
				}
				// Only what was published is to be recovered: a number
				// whose Publish failed is not counted when it was not
				// received.
				p := s.pubs[st.pub]
				p.mu.Lock()
				for n := 0; n <= last; n++ {
					if !bs.has(n) && !p.failed[st.topic].has(n) {
						m++
					}
				}
				p.mu.Unlock()
			}
			duplicates += sn.duplicates
			unparsable += sn.unparsable
			sn.mu.Unlock()
			delivered += sn.delivered.Load()
			missing += m
			parts = append(parts, fmt.Sprintf("%s: %d received, %d missing", sn.name, distinct, m))
		}
		holds := uint64(missing) == st.Gaps+st.Dropped
		if s.c.recover {
			holds = missing == 0 && st.Unrecovered == 0 && st.HistoryLost == 0 && st.Dropped == 0
		}
		verdict := "holds"
		if !holds {
			verdict = "DOES NOT HOLD"
			ok = false
		}
		fmt.Printf("soak:   subscriber %d: missing %d, gaps %d + drops %d = %d: %s (reconnects %d, decode failures %d, recovered %d, unrecovered %d, history lost %d)\n",
			sb.index, missing, st.Gaps, st.Dropped, st.Gaps+st.Dropped, verdict, st.Reconnects, st.DecodeFailures,
			st.Recovered, st.Unrecovered, st.HistoryLost)
		slices.Sort(parts)
		for _, part := range parts {
			fmt.Printf("soak:     %s\n", part)
		}
		total.Received += st.Received
		total.Reconnects += st.Reconnects
		total.Gaps += st.Gaps
		total.Dropped += st.Dropped
		total.DecodeFailures += st.DecodeFailures
		total.Duplicates += st.Duplicates
	}
	rssBeforeClose := mem.rss()
	closed := s.closeAll()
	if !closed {
		ok = false
	}

	sec := flowed.Seconds()
	fmt.Printf("soak: ran %v (+ end phase %v)\n", flowed.Round(time.Millisecond), time.Since(endStart).Round(time.Millisecond))
	fmt.Printf("soak: published %d messages (%.0f/s) with %d publish errors (Publisher stats: published %d, failed %d, to no subscriber %d)\n",
		published, float64(published)/sec, pubErrs, ps.Published, ps.Failed, ps.NoSubscribers)
	fmt.Printf("soak: received %d bodies from Redis (%.0f/s), delivered %d to consumers (%.0f/s); duplicates dropped by the Subscribers %d, delivered %d; unparsable %d\n",
		total.Received, float64(total.Received)/sec, delivered, float64(delivered)/sec, total.Duplicates, duplicates, unparsable)
	fmt.Printf("soak: faults: %d server kills, %d CLIENT KILL; reconnects %d; gaps %d; drops %d; decode failures %d; fault errors %d\n",
		s.kills.Load(), s.clientKill.Load(), total.Reconnects, total.Gaps, total.Dropped, total.DecodeFailures, s.faultErrs.Load())
	s.faultMu.Lock()
	fmt.Printf("soak: resume after a server kill (restart begun → OnReconnect): %s\n", summary(s.resumeKill))
	fmt.Printf("soak: resume after CLIENT KILL (CLIENT KILL sent → OnReconnect): %s\n", summary(s.resumeCK))
	s.faultMu.Unlock()
	fmt.Printf("soak: RSS before closing %s\n", kib(rssBeforeClose))
	goRedisLog.mu.Lock()
	fmt.Printf("soak: go-redis logged %d lines; the last: %s\n", goRedisLog.count, goRedisLog.last)
	goRedisLog.mu.Unlock()
	if duplicates > 0 {
		fmt.Println("soak: FAIL: duplicates delivered (go-redis retried a pipeline whose connection broke after Redis ran it)")
		ok = false
	}
	return ok
}

// subscribedEverywhere reports whether Redis has want pubsub clients, each
// subscribed to every topic, its liveness probe channel (probes are on by
// default) and the pattern.
func (s *soak) subscribedEverywhere(want int64) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	list, err := s.admin.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text()
	if err != nil {
		return false
	}
	var complete int64
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		fields := strings.Fields(line)
		if slices.Contains(fields, "sub="+strconv.Itoa(len(s.topics)+1)) && slices.Contains(fields, "psub=1") {
			complete++
		}
	}
	return complete == want
}

// closeAll closes every Subscriber, Publisher and client, bounded; it
// reports whether everything closed in time.
func (s *soak) closeAll() bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, sb := range s.subs {
			sb.cancel()
			_ = sb.sub.Close()
			sb.wg.Wait()
			_ = sb.client.Close()
		}
		for _, p := range s.pubs {
			_ = p.pub.Close()
			_ = p.client.Close()
		}
		_ = s.admin.Close()
	}()
	select {
	case <-done:
		return true
	case <-time.After(30 * time.Second):
		fmt.Println("soak: FAIL: closing the Subscribers and Publishers takes more than 30s")
		return false
	}
}

func summary(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	r := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	return fmt.Sprintf("%d reconnects, min %v, median %v, mean %v, p95 %v, max %v",
		len(s), r(s[0]), r(s[len(s)/2]), r(sum/time.Duration(len(s))), r(s[len(s)*95/100]), r(s[len(s)-1]))
}
