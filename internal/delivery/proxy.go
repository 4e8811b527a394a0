package delivery

import (
	"context"
	"errors"

	"github.com/pushproxy/pushproxy/internal/settings"
)

// ProxySource gives the proxy settings; *settings.Store implements it.
type ProxySource interface {
	Proxy(ctx context.Context) (settings.Proxy, error)
}

// ErrProxyDisabled means the proxy is not enabled, so nothing may be pushed.
var ErrProxyDisabled = errors.New("the push notification proxy is not enabled (pushctl proxy enable --organization ...)")

// RelayURI is a URISource reading the proxy settings at every call: it
// fails with ErrProxyDisabled when the proxy is not enabled or has no Uri.
func RelayURI(s ProxySource) URISource {
	return func(ctx context.Context) (string, error) {
		proxy, err := s.Proxy(ctx)
		if err != nil {
			return "", err
		}
		if !proxy.Enabled || proxy.URI == "" {
			return "", ErrProxyDisabled
		}
		return proxy.URI, nil
	}
}
