// Command relay is pushproxy's cloud push service: it verifies the S2S
// tokens of partner organizations and forwards their unread-count badges to
// APNs, FCM and Web Push. It is a thin main over internal/relay.
package main

import (
	"context"
	"io"
	"os"

	"github.com/pushproxy/pushproxy/internal/daemon"
	"github.com/pushproxy/pushproxy/internal/relay"
)

const description = `Receives badge notifications from the on-premises dispatchers of partner
organizations and forwards them to the devices' push services.

Endpoints (<base> is --base-path, by default /PushNotifications):
  POST <base>/service.svc/PublishOnPremNotifications
        the relay protocol: Authorization: Bearer <S2S token>, a JSON batch of
        notifications; answers one result per device (delivered, gone, retry
        with BackOffTimeInMilliseconds, rejected). A missing or bad token gets
        401 with WWW-Authenticate: Bearer client_id="<principal>",
        trusted_issuers="<issuer>@<realm>" and nothing is forwarded. The tenant
        is the organization that registered the token's certificate.
  GET  <base>/metadata/json/1   the auth metadata document
  GET  /devices                 with --devices-page: the devices of "log" apps, live
  GET  /healthz, /readyz, /metrics (pushproxy_relay_*)

Partners (organizations and their certificates) and apps (appId -> apns, fcm,
webpush or log, with credential file paths) are registered with
"pushctl relay partner add" and "pushctl relay app add". They are kept in the
key-value buckets relay_partners and relay_apps of this relay's NATS
(--nats-url), which every relay replica watches: changes apply at once,
without a restart.

Each organization has a token bucket (--tenant-rate, --tenant-burst); each
push service has its own concurrency limit and timeout (--provider-*), so a
slow or failing one delays only its own devices.`

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

func run(args []string, getenv func(string) string, stderr io.Writer) int {
	cmd := daemon.New("relay", "relay --host HOST --nats-url URL [flags]", description, stderr, daemon.Options{})
	cfg := relay.Flags(cmd.Flags, "")
	return cmd.Main(context.Background(), args, getenv, func(ctx context.Context, env daemon.Env) error {
		return relay.Run(ctx, *cfg, env.Conn, env.Log, env.Registry)
	})
}
