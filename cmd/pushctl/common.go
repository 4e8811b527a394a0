package main

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/relayclient"
	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
	"github.com/pushproxy/pushproxy/internal/tokens/onprem"
	"github.com/pushproxy/pushproxy/internal/unread"
)

// connectOpen connects as connect does, then opens what the command needs
// from the deployment's JetStream with open (settings.Open, broker.Keyer,
// ...); the caller closes conn.
func connectOpen[T any](ctx context.Context, o *broker.Options, open func(context.Context, jetstream.JetStream) (T, error)) (*broker.Conn, T, error) {
	var zero T
	conn, err := connect(ctx, o)
	if err != nil {
		return nil, zero, err
	}
	t, err := open(ctx, conn.JS)
	if err != nil {
		conn.Close()
		return nil, zero, err
	}
	return conn, t, nil
}

// pushStores are the stores a one-off push (dlq redrive, replay) reads
// and updates.
type pushStores struct {
	settings *settings.Store
	unread   *unread.Store
	subs     *subscriptions.Store
}

// openPushStores opens the settings, unread state and subscription stores.
func openPushStores(ctx context.Context, js jetstream.JetStream, keyer *events.Keyer) (pushStores, error) {
	var s pushStores
	var err error
	if s.settings, err = settings.Open(ctx, js); err != nil {
		return s, err
	}
	if s.unread, err = unread.Open(ctx, js); err != nil {
		return s, err
	}
	if s.subs, err = subscriptions.Open(ctx, js, keyer); err != nil {
		return s, err
	}
	return s, nil
}

// relay returns a client for one-off pushes: it signs with the S2S
// certificates in certDir (default: the auth configuration's), waits up to
// timeout for each answer, and has no circuit breaker.
func (s pushStores) relay(certDir string, timeout time.Duration) *relayclient.Client {
	return relayclient.New(relayclient.Config{Tokens: onprem.NewSource(s.settings, certDir), Timeout: timeout, BreakerFailures: -1})
}
