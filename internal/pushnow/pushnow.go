// Package pushnow holds what the operator's one-off pushes share: the
// redrive of dead letters and the push of a replayed count. Both send to the
// relay once, outside the dispatcher's retries, and only while the proxy is
// enabled.
package pushnow

import (
	"context"
	"errors"

	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/settings"
)

// Publisher sends a batch once; *relayclient.Client implements it.
type Publisher interface {
	Publish(ctx context.Context, uri string, batch []relayproto.Notification) (relayproto.Response, error)
}

// ProxySource gives the proxy settings; *settings.Store implements it.
type ProxySource interface {
	Proxy(ctx context.Context) (settings.Proxy, error)
}

// ErrProxyDisabled means the proxy is not enabled, so nothing may be pushed.
var ErrProxyDisabled = errors.New("the push notification proxy is not enabled (pushctl proxy enable --organization ...)")

// RelayURI returns the relay's URI from the proxy settings, or
// ErrProxyDisabled when the proxy is not enabled or has no URI.
func RelayURI(ctx context.Context, s ProxySource) (string, error) {
	proxy, err := s.Proxy(ctx)
	if err != nil {
		return "", err
	}
	if !proxy.Enabled || proxy.URI == "" {
		return "", ErrProxyDisabled
	}
	return proxy.URI, nil
}

// Tally counts the relay's answers for devices by status.
type Tally struct {
	Delivered, Gone, Retry, Rejected int
}

// Add counts one device answered with status; a status other than
// delivered, gone or retry counts as rejected.
func (t *Tally) Add(status relayproto.DeviceStatus) {
	switch status {
	case relayproto.DeviceDelivered:
		t.Delivered++
	case relayproto.DeviceGone:
		t.Gone++
	case relayproto.DeviceRetry:
		t.Retry++
	default:
		t.Rejected++
	}
}
