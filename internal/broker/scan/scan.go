// Package scan reads the messages of a stream that match subject filters,
// from a start time up to what the stream held when the scan began, with an
// ordered consumer: no durable state on the server, nothing acknowledged,
// so it never disturbs the consumers that do the work. Replay and the
// dead-letter tools read through it.
package scan

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Message is one stored message.
type Message struct {
	// Seq is the stream sequence.
	Seq uint64
	// Subject is the subject it is stored under.
	Subject string
	// Stored is when the stream stored it.
	Stored time.Time
	// Data is the body.
	Data []byte
	// Left is how many messages the scan has still to read after this one
	// (at most; fewer when Until ends it early): for progress.
	Left uint64
}

// Options says what to read.
type Options struct {
	// Filters are the subject filters; all of the stream when empty.
	Filters []string
	// Since, when set, starts at the first message stored at or after it.
	Since time.Time
	// Until, when set, stops before the first message stored after it.
	Until time.Time
	// Limit, when positive, stops after that many messages.
	Limit int
	// Wait bounds each fetch; 5 seconds when zero.
	Wait time.Duration
}

// Stream reads the messages of stream that opts selects, in stream order,
// calling visit for each; a visit error stops the scan and is returned.
// Messages stored after the scan began are not read.
func Stream(ctx context.Context, js jetstream.JetStream, stream string, opts Options, visit func(Message) error) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: opts.Filters, DeliverPolicy: jetstream.DeliverAllPolicy}
	if !opts.Since.IsZero() {
		since := opts.Since
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &since
	}
	wait := opts.Wait
	if wait <= 0 {
		wait = 5 * time.Second
	}
	cons, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", stream, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", stream, err)
	}
	remaining := info.NumPending
	if opts.Limit > 0 {
		remaining = min(remaining, uint64(opts.Limit))
	}
	for remaining > 0 {
		batch, err := cons.Fetch(int(min(remaining, 256)), jetstream.FetchMaxWait(wait))
		if err != nil {
			return fmt.Errorf("reading stream %s: %w", stream, err)
		}
		got := 0
		for msg := range batch.Messages() {
			if remaining == 0 {
				continue // drain the batch
			}
			got++
			meta, err := msg.Metadata()
			if err != nil {
				return fmt.Errorf("reading stream %s: message metadata: %w", stream, err)
			}
			if !opts.Until.IsZero() && meta.Timestamp.After(opts.Until) {
				remaining = 0
				continue
			}
			remaining = min(remaining-1, meta.NumPending)
			if err := visit(Message{Seq: meta.Sequence.Stream, Subject: msg.Subject(), Stored: meta.Timestamp, Data: msg.Data(), Left: remaining}); err != nil {
				return err
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("reading stream %s: %w", stream, err)
		}
		if got == 0 && remaining > 0 {
			// Messages may have been deleted since: ask again.
			info, err := cons.Info(ctx)
			if err != nil {
				return fmt.Errorf("reading stream %s: %w", stream, err)
			}
			if info.NumPending == 0 {
				return nil
			}
			return fmt.Errorf("reading stream %s: %d more messages expected, none came within %s", stream, remaining, wait)
		}
	}
	return nil
}
