package ingest

import (
	"net"
	"net/url"
	"strings"

	"github.com/pushproxy/pushproxy/internal/providers/webpush"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

// checkWebPush refuses, at subscribe time, a Web Push subscription that can
// never work: not the JSON of a PushSubscription with an https endpoint, a
// P-256 key and a 16-byte auth secret, or (unless allowPrivate) an
// endpoint on a loopback, private, link-local or unspecified address. Other
// platforms pass.
func checkWebPush(allowPrivate bool) func(subscriptions.Subscription) error {
	return func(s subscriptions.Subscription) error {
		if s.Platform != subscriptions.PlatformWebPush && s.Platform != subscriptions.PlatformWebApp {
			return nil
		}
		sub, err := webpush.ParseSubscription(s.DeviceID)
		if err != nil {
			return &subscriptions.ValidationError{Field: "deviceId", Reason: "not a Web Push subscription: " + err.Error()}
		}
		if allowPrivate {
			return nil
		}
		u, err := url.Parse(sub.Endpoint)
		if err != nil {
			return &subscriptions.ValidationError{Field: "deviceId", Reason: "the subscription endpoint is not a URL"}
		}
		if privateHost(u.Hostname()) {
			return &subscriptions.ValidationError{Field: "deviceId",
				Reason: "the subscription endpoint " + u.Hostname() + " is a loopback or private address, which a push service never is (--allow-private-endpoints allows it for tests)"}
		}
		return nil
	}
}

// privateHost reports whether host names this machine or a private
// network: localhost, or a loopback, private, link-local or unspecified IP.
func privateHost(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && (ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified())
}
