// Package metrics exports the counters of redispubsub Publishers and
// Subscribers (what their Stats methods return) to Prometheus.
//
//	c := metrics.NewCollector()
//	_ = c.AddPublisher("orders", pub)
//	_ = c.AddSubscriber("orders", sub)
//	registry.MustRegister(c)
//
// Every field of PublisherStats is exported as a metric
// redispubsub_publisher_<field>_total and every field of SubscriberStats as
// redispubsub_subscriber_<field>_total (redispubsub_subscriber_received_total,
// redispubsub_subscriber_gaps_total, ...), each with a label "name" that tells
// the Publishers, and the Subscribers, apart. The values are read from Stats
// at every scrape, so they are exactly what Stats says at that moment.
package metrics

import (
	"errors"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	redispubsub "github.com/alkdev/watermill-redispubsub"
)

// Publisher is what the Collector reads; *redispubsub.Publisher implements it.
type Publisher interface {
	Stats() redispubsub.PublisherStats
}

// Subscriber is what the Collector reads; *redispubsub.Subscriber implements it.
type Subscriber interface {
	Stats() redispubsub.SubscriberStats
}

// ErrNameTaken is wrapped by the error AddPublisher and AddSubscriber return
// for a name that is empty or already used by another Publisher (or
// Subscriber) of the Collector.
var ErrNameTaken = errors.New("metrics: name empty or already taken")

// Collector is a prometheus.Collector over any number of Publishers and
// Subscribers. Its methods are safe for concurrent use, also while it is
// being scraped. The zero value is not usable; call NewCollector.
type Collector struct {
	pubs *family[redispubsub.PublisherStats]
	subs *family[redispubsub.SubscriberStats]
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a Collector with no Publisher and no Subscriber: it
// describes every metric and collects none until some are added.
func NewCollector() *Collector {
	c := &Collector{
		pubs: newFamily("redispubsub_publisher_", publisherStats),
		subs: newFamily("redispubsub_subscriber_", subscriberStats),
	}
	c.subs.extraDescs, c.subs.extra = livenessDescs, c.collectLiveness
	return c
}

// AddPublisher exports p's Stats with the label name="name". It returns an
// error wrapping ErrNameTaken when name is empty or another Publisher of the
// Collector has it. The Collector does not close p, and keeps reading it
// until RemovePublisher.
func (c *Collector) AddPublisher(name string, p Publisher) error {
	return c.pubs.add(name, p)
}

// AddSubscriber exports s's Stats with the label name="name", as
// AddPublisher does for a Publisher. A Publisher and a Subscriber may share a
// name.
//
// When s also has a Health method (as *redispubsub.Subscriber has), its
// readiness is exported too.
func (c *Collector) AddSubscriber(name string, s Subscriber) error {
	return c.subs.add(name, s)
}

// RemovePublisher stops exporting the Publisher added under name, if any.
func (c *Collector) RemovePublisher(name string) { c.pubs.remove(name) }

// RemoveSubscriber stops exporting the Subscriber added under name, if any.
func (c *Collector) RemoveSubscriber(name string) { c.subs.remove(name) }

// Describe implements prometheus.Collector: it sends the description of
// every metric, whether or not a Publisher or Subscriber was added.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	c.pubs.describe(ch)
	c.subs.describe(ch)
}

// Collect implements prometheus.Collector: it reads the Stats of every
// Publisher and Subscriber once and sends one sample per metric for each.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	c.pubs.collect(ch)
	c.subs.collect(ch)
}

// family exports one kind of Stats S for any number of named sources.
type family[S any] struct {
	stats []stat[S]
	descs []*prometheus.Desc
	// extra, when set, sends the metrics of a source that are not one
	// figure each (described by extraDescs): of is what was added.
	extra      func(name string, of any, s S, ch chan<- prometheus.Metric)
	extraDescs []*prometheus.Desc

	mu      sync.Mutex
	sources map[string]source[S]
}

// source is a Publisher or Subscriber added to a family.
type source[S any] interface {
	Stats() S
}

func newFamily[S any](prefix string, stats []stat[S]) *family[S] {
	f := &family[S]{stats: stats, sources: make(map[string]source[S])}
	for _, st := range stats {
		f.descs = append(f.descs, prometheus.NewDesc(prefix+st.name, st.help, []string{"name"}, nil))
	}
	return f
}

func (f *family[S]) add(name string, src source[S]) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, taken := f.sources[name]; taken || name == "" {
		return fmt.Errorf("%w: %q", ErrNameTaken, name)
	}
	f.sources[name] = src
	return nil
}

func (f *family[S]) remove(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.sources, name)
}

func (f *family[S]) describe(ch chan<- *prometheus.Desc) {
	for _, d := range f.descs {
		ch <- d
	}
	for _, d := range f.extraDescs {
		ch <- d
	}
}

func (f *family[S]) collect(ch chan<- prometheus.Metric) {
	type read struct {
		of    any
		stats S
	}
	f.mu.Lock()
	snapshot := make(map[string]read, len(f.sources))
	for name, src := range f.sources {
		snapshot[name] = read{src, src.Stats()}
	}
	f.mu.Unlock()
	for name, r := range snapshot {
		for i, st := range f.stats {
			ch <- prometheus.MustNewConstMetric(f.descs[i], st.kind, st.value(r.stats), name)
		}
		if f.extra != nil {
			f.extra(name, r.of, r.stats, ch)
		}
	}
}
