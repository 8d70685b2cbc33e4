package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/redis/go-redis/v9"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

// HistoryConfig configures RunHistory: the history rows of make bench, the
// adapter with PublisherConfig.History beside raw go-redis, the adapter
// without history, and the anchor, centrifuge's Redis broker with history,
// on one Redis in one run.
type HistoryConfig struct {
	// Addr is the Redis (host:port); NewClient opens clients of it.
	Addr      string
	NewClient func() redis.UniversalClient
	// Prefix starts every channel and key.
	Prefix string
	// Duration of a throughput round; Rounds of them (median).
	Duration time.Duration
	Rounds   int
	// Publishers goroutines publish single messages of Size bytes.
	Publishers, Size int
	// Held is the history's size, and how many messages the recovery and
	// history read rows read.
	Held int
	// CentrifugeDir is the directory of the anchor's program (its own
	// module, run with go run); "" leaves the anchor out.
	CentrifugeDir string
	Progress      io.Writer
}

// HistoryReport holds the history rows.
type HistoryReport struct {
	Config     HistoryConfig
	Raw        float64 // raw go-redis PUBLISH, msg/s
	RawH       float64 // raw go-redis with a history: rawHistoryScript per message, msg/s
	RawE2E     float64 // raw go-redis PUBLISH to a raw go-redis PubSub, end to end, msg/s
	RawE2EH    float64 // raw go-redis rawHistoryScript to a raw go-redis PubSub, end to end, msg/s
	Publish    float64 // adapter without history, msg/s
	PublishH   float64 // adapter with history, msg/s
	E2E        float64 // adapter without history, end to end, msg/s
	E2EH       float64 // adapter with history, end to end, msg/s
	RawRead    float64 // raw go-redis LRANGE of Held entries, seconds
	Read       float64 // SubscribeFrom of Held missed messages, until it returned (the history read), seconds
	Recovery   float64 // SubscribeFrom of Held missed messages, until all acknowledged, seconds
	BytesHeld  float64 // Redis memory per held message (the history's keys)
	RawHeld    float64 // Redis memory per payload in a list of Held payloads, pushed by raw go-redis (the bare limit)
	Centrifuge *centrifugeResult
	CentErr    error
}

type centrifugeResult struct {
	Version          string  `json:"version"`
	PublishHistory   float64 `json:"publish_history"`
	PublishNoHistory float64 `json:"publish_no_history"`
	E2EHistory       float64 `json:"e2e_history"`
	HistoryRead      float64 `json:"history_read"`
	BytesPerHeld     float64 `json:"bytes_per_held"`
}

// RunHistory measures the history rows.
func RunHistory(ctx context.Context, cfg HistoryConfig) (*HistoryReport, error) {
	rep := &HistoryReport{Config: cfg}
	history := redispubsub.History{Size: cfg.Held, TTL: 5 * time.Minute}
	var raw, rawH, rawE2E, rawE2EH, pub, pubH, e2e, e2eH, rawReads, reads, recoveries []float64
	for round := range cfg.Rounds {
		topic := fmt.Sprintf("history.%d", round)
		steps := []struct {
			name string
			into *[]float64
			run  func() (float64, error)
		}{
			{"raw PUBLISH", &raw, func() (float64, error) { return rawRate(ctx, cfg, topic+".raw", false, false) }},
			{"raw with history", &rawH, func() (float64, error) { return rawRate(ctx, cfg, topic+".rawh", true, false) }},
			{"raw end to end", &rawE2E, func() (float64, error) { return rawRate(ctx, cfg, topic+".rawe", false, true) }},
			{"raw end to end with history", &rawE2EH, func() (float64, error) { return rawRate(ctx, cfg, topic+".raweh", true, true) }},
			{"publish", &pub, func() (float64, error) { return adapterRate(ctx, cfg, topic+".p", redispubsub.History{}, false) }},
			{"publish with history", &pubH, func() (float64, error) { return adapterRate(ctx, cfg, topic+".ph", history, false) }},
			{"end to end", &e2e, func() (float64, error) { return adapterRate(ctx, cfg, topic+".e", redispubsub.History{}, true) }},
			{"end to end with history", &e2eH, func() (float64, error) { return adapterRate(ctx, cfg, topic+".eh", history, true) }},
			{"recovery", &recoveries, func() (float64, error) {
				took, err := recoveryTime(ctx, cfg, topic+".r", history)
				rawReads, reads = append(rawReads, took.rawRead), append(reads, took.read)
				return took.recovery, err
			}},
		}
		for _, step := range steps {
			v, err := step.run()
			if err != nil {
				return rep, fmt.Errorf("history bench, %s: %w", step.name, err)
			}
			*step.into = append(*step.into, v)
			if cfg.Progress != nil {
				fmt.Fprintf(cfg.Progress, "history round %d: %s: %.4g\n", round+1, step.name, v)
			}
		}
	}
	rep.RawH, rep.RawE2E, rep.RawE2EH = median(rawH), median(rawE2E), median(rawE2EH)
	rep.Raw, rep.Publish, rep.PublishH, rep.E2E, rep.E2EH = median(raw), median(pub), median(pubH), median(e2e), median(e2eH)
	rep.RawRead, rep.Read, rep.Recovery = median(rawReads), median(reads), median(recoveries)
	// Each round's recovery topic holds Held messages: the median of what
	// they cost (how many records share a list's 8 KB node varies with
	// their size).
	var held []float64
	for round := range cfg.Rounds {
		b, err := bytesPerHeld(ctx, cfg, fmt.Sprintf("history.%d.r", round))
		if err != nil {
			return rep, err
		}
		held = append(held, b)
	}
	rep.BytesHeld = median(held)
	var err error
	if rep.RawHeld, err = rawBytesPerHeld(ctx, cfg); err != nil {
		return rep, err
	}
	if cfg.CentrifugeDir != "" {
		rep.Centrifuge, rep.CentErr = runCentrifuge(ctx, cfg)
	}
	return rep, nil
}

// rawHistoryScript is the bare limit of a history kept on publish, run by
// raw go-redis once per message: it appends the payload to a capped list
// (KEYS[1], ARGV[2] entries), counts the channel's offset in a hash
// (KEYS[2]) and publishes the payload on ARGV[3]. The adapter's script does
// this and more: each message's record and body carry its offset and the
// history's epoch, and a retried pipeline is told apart.
var rawHistoryScript = redis.NewScript(`
local n = redis.call('RPUSH', KEYS[1], ARGV[1])
if n > tonumber(ARGV[2]) then
	redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
end
redis.call('HINCRBY', KEYS[2], 's', 1)
return redis.call('PUBLISH', ARGV[3], ARGV[1])
`)

// rawRate: raw go-redis from Publishers goroutines, one message per
// command: PUBLISH, or with history rawHistoryScript (EVALSHA); with
// consume, end to end to a raw go-redis PubSub of the channel.
func rawRate(ctx context.Context, cfg HistoryConfig, topic string, history, consume bool) (float64, error) {
	pc, sc := cfg.NewClient(), cfg.NewClient()
	defer pc.Close()
	defer sc.Close()
	body := payload(cfg.Size)
	channel := cfg.Prefix + topic
	send := func() error { return pc.Publish(ctx, channel, body).Err() }
	if history {
		keys := []string{"{" + channel + "}:raw-list", "{" + channel + "}:raw-meta"}
		defer pc.Del(context.WithoutCancel(ctx), keys...)
		send = func() error { return rawHistoryScript.Run(ctx, pc, keys, body, cfg.Held, channel).Err() }
	}
	if !consume {
		return parallel(cfg, send)
	}
	return endToEnd(cfg, send, func(received func()) (func(), error) {
		ps := sc.Subscribe(ctx, channel)
		if _, err := ps.Receive(ctx); err != nil { // the confirmation
			_ = ps.Close()
			return nil, err
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				if _, err := ps.ReceiveMessage(context.Background()); err != nil {
					return // closed
				}
				received()
			}
		}()
		return func() { _ = ps.Close(); <-done }, nil
	})
}

// parallel runs send from Publishers goroutines for Duration and returns
// the calls per second.
func parallel(cfg HistoryConfig, send func() error) (float64, error) {
	if err := send(); err != nil { // warm-up
		return 0, err
	}
	var n atomic.Uint64
	var failed atomic.Pointer[error]
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	var wg sync.WaitGroup
	for range cfg.Publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if err := send(); err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		return 0, *err
	}
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}

// adapterRate: the adapter's Publisher (with history h) from Publishers
// goroutines, single messages; with consume, end to end to one
// subscription that Acks each, until every message arrived.
func adapterRate(ctx context.Context, cfg HistoryConfig, topic string, h redispubsub.History, consume bool) (float64, error) {
	pc, sc := cfg.NewClient(), cfg.NewClient()
	defer pc.Close()
	defer sc.Close()
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: pc, ChannelPrefix: cfg.Prefix, History: h}, nil)
	if err != nil {
		return 0, err
	}
	defer pub.Close()
	body := payload(cfg.Size)
	send := func() error { return pub.Publish(topic, message.NewMessage(watermill.NewUUID(), body)) }
	if !consume {
		return parallel(cfg, send)
	}
	return endToEnd(cfg, send, func(received func()) (func(), error) {
		sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: sc, ChannelPrefix: cfg.Prefix}, nil)
		if err != nil {
			return nil, err
		}
		subCtx, cancel := context.WithCancel(ctx)
		msgs, err := sub.Subscribe(subCtx, topic)
		if err != nil {
			cancel()
			_ = sub.Close()
			return nil, err
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for msg := range msgs {
				msg.Ack()
				received()
			}
		}()
		return func() { cancel(); <-done; _ = sub.Close() }, nil
	})
}

// endToEnd runs send from Publishers goroutines for Duration, to a consumer
// that consume starts, calling received for each message, and that its
// stop ends. The publishers stay at most maxInFlight messages ahead of the
// consumer, as in the other end-to-end cases. It returns the messages per
// second from the first sent until every one arrived.
func endToEnd(cfg HistoryConfig, send func() error, consume func(received func()) (stop func(), err error)) (float64, error) {
	window := make(chan struct{}, maxInFlight)
	// all is closed once the consumer received what was sent: target, set
	// when the publishers are done (0 until then).
	var received, target atomic.Uint64
	all := make(chan struct{})
	var allOnce sync.Once
	stop, err := consume(func() {
		if n := received.Add(1); n == target.Load() {
			allOnce.Do(func() { close(all) })
		}
		<-window
	})
	if err != nil {
		return 0, err
	}
	defer stop()
	var sent atomic.Uint64
	start := time.Now()
	if _, err := parallel(cfg, func() error {
		window <- struct{}{}
		sent.Add(1)
		return send()
	}); err != nil {
		return 0, err
	}
	target.Store(sent.Load())
	if received.Load() >= sent.Load() {
		allOnce.Do(func() { close(all) })
	}
	select {
	case <-all:
	case <-time.After(30 * time.Second):
		return 0, fmt.Errorf("received %d of %d", received.Load(), sent.Load())
	}
	return float64(sent.Load()) / time.Since(start).Seconds(), nil
}

// recoveryTimes are what recoveryTime measures, in seconds.
type recoveryTimes struct {
	rawRead  float64 // raw go-redis reading the Held records (LRANGE)
	read     float64 // SubscribeFrom, until it returned: the history read
	recovery float64 // SubscribeFrom, until the Held messages were handed out and acknowledged
}

// recoveryTime publishes Held messages with history h on topic, then
// measures SubscribeFrom the position before the first until it returned
// (the history read) and until the Held messages were handed out and
// acknowledged (what recovering that many missed messages costs), and raw
// go-redis reading them.
func recoveryTime(ctx context.Context, cfg HistoryConfig, topic string, h redispubsub.History) (recoveryTimes, error) {
	var took recoveryTimes
	pc, sc := cfg.NewClient(), cfg.NewClient()
	defer pc.Close()
	defer sc.Close()
	pub, err := redispubsub.NewPublisher(redispubsub.PublisherConfig{Client: pc, ChannelPrefix: cfg.Prefix, History: h}, nil)
	if err != nil {
		return took, err
	}
	defer pub.Close()
	body := payload(cfg.Size)
	const batch = 100
	for i := 0; i < cfg.Held; i += batch {
		msgs := make([]*message.Message, min(batch, cfg.Held-i))
		for j := range msgs {
			msgs[j] = message.NewMessage(watermill.NewUUID(), body)
		}
		if err := pub.Publish(topic, msgs...); err != nil {
			return took, err
		}
	}
	list := "rps:hlist:{" + cfg.Prefix + topic + "}"
	meta, err := pc.HGetAll(ctx, "rps:hmeta:{"+cfg.Prefix+topic+"}").Result()
	if err != nil {
		return took, err
	}
	top, err := strconv.ParseUint(meta["s"], 10, 64)
	if err != nil {
		return took, fmt.Errorf("the history's last offset %q: %w", meta["s"], err)
	}
	from := redispubsub.Position{Offset: top - uint64(cfg.Held), Epoch: meta["e"]}

	start := time.Now()
	records, err := pc.LRange(ctx, list, -int64(cfg.Held), -1).Result()
	took.rawRead = time.Since(start).Seconds()
	if err != nil {
		return took, err
	}
	if len(records) != cfg.Held {
		return took, fmt.Errorf("LRANGE read %d records, want %d", len(records), cfg.Held)
	}

	sub, err := redispubsub.NewSubscriber(redispubsub.SubscriberConfig{Client: sc, ChannelPrefix: cfg.Prefix}, nil)
	if err != nil {
		return took, err
	}
	defer sub.Close()
	subCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	start = time.Now()
	msgs, err := sub.SubscribeFrom(subCtx, topic, from)
	took.read = time.Since(start).Seconds()
	if err != nil {
		return took, err
	}
	stall := time.After(30 * time.Second)
	for i := range cfg.Held {
		select {
		case msg := <-msgs:
			msg.Ack()
		case <-stall:
			return took, fmt.Errorf("SubscribeFrom: %d of %d messages within 30s", i, cfg.Held)
		}
	}
	took.recovery = time.Since(start).Seconds()
	return took, nil
}

// bytesPerHeld is the Redis memory (MEMORY USAGE of the history's keys) per
// message held in topic's history of Held messages.
func bytesPerHeld(ctx context.Context, cfg HistoryConfig, topic string) (float64, error) {
	client := cfg.NewClient()
	defer client.Close()
	var total int64
	for _, key := range []string{"rps:hlist:{" + cfg.Prefix + topic + "}", "rps:hmeta:{" + cfg.Prefix + topic + "}"} {
		n, err := client.MemoryUsage(ctx, key, 0).Result()
		if err != nil {
			return 0, fmt.Errorf("MEMORY USAGE %s: %w", key, err)
		}
		total += n
	}
	return float64(total) / float64(cfg.Held), nil
}

// rawBytesPerHeld is the bare limit of bytesPerHeld: the Redis memory per
// payload of a list of Held payloads of Size bytes, pushed by raw go-redis
// (RPUSH), with no record around them and no meta hash.
func rawBytesPerHeld(ctx context.Context, cfg HistoryConfig) (float64, error) {
	client := cfg.NewClient()
	defer client.Close()
	key := cfg.Prefix + "history.raw-list"
	body := payload(cfg.Size)
	const batch = 100
	for i := 0; i < cfg.Held; i += batch {
		values := make([]any, min(batch, cfg.Held-i))
		for j := range values {
			values[j] = body
		}
		if err := client.RPush(ctx, key, values...).Err(); err != nil {
			return 0, err
		}
	}
	defer client.Del(context.WithoutCancel(ctx), key)
	n, err := client.MemoryUsage(ctx, key, 0).Result()
	if err != nil {
		return 0, fmt.Errorf("MEMORY USAGE %s: %w", key, err)
	}
	return float64(n) / float64(cfg.Held), nil
}

// runCentrifuge runs the anchor's program (go run in CentrifugeDir) on the
// same Redis with the same workloads.
func runCentrifuge(ctx context.Context, cfg HistoryConfig) (*centrifugeResult, error) {
	cmd := exec.CommandContext(ctx, "go", "run", ".",
		"-addr", cfg.Addr, "-prefix", cfg.Prefix+"centrifuge",
		"-duration", cfg.Duration.String(), "-rounds", strconv.Itoa(cfg.Rounds),
		"-publishers", strconv.Itoa(cfg.Publishers), "-size", strconv.Itoa(cfg.Size), "-held", strconv.Itoa(cfg.Held),
		"-window", strconv.Itoa(maxInFlight))
	cmd.Dir = cfg.CentrifugeDir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("centrifuge anchor (%s): %w: %s", cfg.CentrifugeDir, err, bytes.TrimSpace(stderr.Bytes()))
	}
	var res centrifugeResult
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("centrifuge anchor: %w: %s", err, out)
	}
	return &res, nil
}

// WriteTable writes the history rows as a markdown table.
func (r *HistoryReport) WriteTable(w io.Writer) error {
	c := r.Config
	var b bytes.Buffer
	cent := func(v func(*centrifugeResult) float64) float64 {
		if r.Centrifuge == nil {
			return 0
		}
		return v(r.Centrifuge)
	}
	fmt.Fprintf(&b, "\n### History and recovery (%d goroutines publishing single %d B messages; history of %s)\n\n",
		c.Publishers, c.Size, formatCount(c.Held))
	b.WriteString("| | raw go-redis | raw go-redis with history | adapter | adapter with history | centrifuge with history | centrifuge without | with history / centrifuge |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|\n")
	row := func(name string, raw, rawH, plain, hist, centH, centN float64, unit Unit, higherBetter bool) {
		cell := func(v float64) string {
			if v == 0 {
				return ""
			}
			return unit.format(v)
		}
		ratio := ""
		if hist != 0 && centH != 0 {
			q := hist / centH
			if !higherBetter {
				q = centH / hist
			}
			ratio = formatRatio(q)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", name, cell(raw), cell(rawH), cell(plain), cell(hist), cell(centH), cell(centN), ratio)
	}
	row("publish (msg/s)", r.Raw, r.RawH, r.Publish, r.PublishH,
		cent(func(c *centrifugeResult) float64 { return c.PublishHistory }),
		cent(func(c *centrifugeResult) float64 { return c.PublishNoHistory }), PerSecond, true)
	row("end to end (msg/s)", r.RawE2E, r.RawE2EH, r.E2E, r.E2EH, cent(func(c *centrifugeResult) float64 { return c.E2EHistory }), 0, PerSecond, true)
	row(fmt.Sprintf("read the last %s from the history (raw: LRANGE; adapter: SubscribeFrom until it returned, records not yet decoded; "+
		"centrifuge: History, decoded)", formatCount(c.Held)), r.RawRead, 0, 0, r.Read,
		cent(func(c *centrifugeResult) float64 { return c.HistoryRead }), 0, Seconds, false)
	row(fmt.Sprintf("recover %s missed (SubscribeFrom, until all Acked)", formatCount(c.Held)), 0, 0, 0, r.Recovery,
		cent(func(c *centrifugeResult) float64 { return c.HistoryRead }), 0, Seconds, false)
	row("Redis memory per held message (raw: a list of the bare payloads)", r.RawHeld, 0, 0, r.BytesHeld,
		cent(func(c *centrifugeResult) float64 { return c.BytesPerHeld }), 0, Bytes, false)
	b.WriteString("\nraw go-redis with history: one script per message (EVALSHA) that RPUSHes the payload to a capped list, " +
		"counts the channel's offset (HINCRBY) and PUBLISHes the payload: the bare limit of the adapter's history, " +
		"whose records and bodies also carry each message's offset and the history's epoch.\n")
	switch {
	case r.Centrifuge != nil:
		fmt.Fprintf(&b, "\nRatios: higher is better for the adapter (rates: adapter / centrifuge; times and memory: centrifuge / adapter). "+
			"centrifuge %s's RedisBroker (streams, one Lua script per publication), run by internal/bench/centrifuge on the same "+
			"redis-server in this run; its recovery row is its history read (History since a position), the adapter's is "+
			"SubscribeFrom handing out and acknowledging every message.\n", r.Centrifuge.Version)
	case r.CentErr != nil:
		fmt.Fprintf(&b, "\ncentrifuge: not measured: %v\n", r.CentErr)
	}
	_, err := w.Write(b.Bytes())
	return err
}
