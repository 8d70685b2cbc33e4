package bench

import (
	"errors"
	"fmt"

	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/nats-io/nats.go"
)

// openNATS opens watermill-nats on core NATS (JetStream off), a Publisher
// and a Subscriber on connections of their own to the run's nats-server,
// with its default marshaler (the payload as the NATS message's body, the
// UUID and metadata as headers). Core NATS confirms neither a SUB nor a
// PUB: a Flush (PING, PONG) after the subscriptions, and after the last
// Publish of a publish-only measurement, makes sure the server has them.
func openNATS(cfg Config, on target) (transport, error) {
	if on.natsURL == "" {
		return nil, errors.New("no nats-server") // Run does not plan such a cell
	}
	pc, err := nats.Connect(on.natsURL, nats.Name("redispubsub-bench publisher"))
	if err != nil {
		return nil, err
	}
	sc, err := nats.Connect(on.natsURL, nats.Name("redispubsub-bench subscriber"))
	if err != nil {
		pc.Close()
		return nil, err
	}
	closeConns := func() {
		sc.Close()
		pc.Close()
	}
	off := wmnats.JetStreamConfig{Disabled: true}
	pub, err := wmnats.NewPublisherWithNatsConn(pc, wmnats.PublisherPublishConfig{
		Marshaler:         &wmnats.NATSMarshaler{},
		SubjectCalculator: wmnats.DefaultSubjectCalculator,
		JetStream:         off,
	}, nil)
	if err != nil {
		closeConns()
		return nil, err
	}
	sub, err := wmnats.NewSubscriberWithNatsConn(sc, wmnats.SubscriberSubscriptionConfig{JetStream: off}, nil)
	if err != nil {
		closeConns()
		return nil, err
	}
	return &wmTransport{
		pub:  pub,
		sub:  sub,
		name: func(t string) string { return cfg.Prefix + t },
		// The Subscriber drains its connection, which Close then ends at
		// once; the Publisher closes its own.
		closeFn: func() error {
			err := errors.Join(sub.Close(), pub.Close())
			closeConns()
			return err
		},
		subscribed: sc.Flush,
		flushFn:    pc.Flush,
		stats: func() string {
			s := fmt.Sprintf("nats: publisher sent %d, subscriber received %d", pc.Stats().OutMsgs, sc.Stats().InMsgs)
			if err := sc.LastError(); err != nil { // a slow consumer's drops, for one
				s += "; subscriber's last error: " + err.Error()
			}
			return s
		},
	}, nil
}
