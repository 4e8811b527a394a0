package broker

import (
	"flag"

	"github.com/pushproxy/pushproxy/internal/flagenv"
)

// ConnectFlags registers the NATS connection flags on fs and returns the
// options they fill. embeddedDefault decides whether --nats-embedded starts
// true (pushctl standalone) or false (the split daemons).
func ConnectFlags(fs *flag.FlagSet, name string, embeddedDefault bool) *Options {
	o := &Options{Name: name}
	fs.Var((*flagenv.StringList)(&o.URLs), "nats-url", "NATS server URLs, comma-separated (e.g. nats://n1:4222,nats://n2:4222)")
	fs.StringVar(&o.User, "nats-user", "", "NATS user name")
	fs.StringVar(&o.Password, "nats-password", "", "NATS password")
	fs.StringVar(&o.Token, "nats-token", "", "NATS authentication token")
	fs.StringVar(&o.CredsFile, "nats-creds", "", "NATS credentials file (JWT and NKey seed)")
	fs.StringVar(&o.CAFile, "nats-ca", "", "CA certificate file to verify the NATS servers")
	fs.StringVar(&o.CertFile, "nats-cert", "", "client certificate file for NATS TLS")
	fs.StringVar(&o.KeyFile, "nats-key", "", "client key file for NATS TLS")
	fs.BoolVar(&o.Embedded, "nats-embedded", embeddedDefault, "run a NATS server with JetStream inside this process instead of connecting to --nats-url")
	fs.StringVar(&o.StoreDir, "data-dir", "./data", "folder where the embedded NATS server keeps its data")
	fs.StringVar(&o.Listen, "nats-listen", "", "host:port where the embedded NATS server accepts clients (empty: in-process only)")
	return o
}

// LayoutFlags registers the stream and bucket tunables on fs and returns
// the layout they fill, starting from DefaultLayout.
func LayoutFlags(fs *flag.FlagSet) *Layout {
	l := DefaultLayout()
	fs.IntVar(&l.Replicas, "replicas", l.Replicas, "replicas of every stream and bucket (1 on one server, 3 on a cluster)")
	fs.IntVar(&l.Partitions, "partitions", l.Partitions, "partitions of the MAIL stream; dispatcher workers scale out up to this number")
	fs.DurationVar(&l.MailMaxAge, "mail-max-age", l.MailMaxAge, "how long mailbox events are kept (how far back replay reads)")
	fs.DurationVar(&l.DuplicateWindow, "duplicate-window", l.DuplicateWindow, "how long a change id is remembered to drop a source's retries; the NATS server keeps each id in memory for this long, about 105 bytes per event (630 MB at 10,000 events/s over 10 minutes)")
	fs.DurationVar(&l.SubscriptionTTL, "subscription-ttl", l.SubscriptionTTL, "how long a device subscription lives after its last refresh")
	fs.DurationVar(&l.DeadMaxAge, "dead-max-age", l.DeadMaxAge, "how long dead letters and advisories are kept")
	fs.DurationVar(&l.SentMaxAge, "sent-max-age", l.SentMaxAge, "how long the record of sent pushes is kept")
	fs.DurationVar(&l.ProbeMaxAge, "probe-max-age", l.ProbeMaxAge, "how long probe and canary results are kept")
	fs.DurationVar(&l.TombstoneTTL, "tombstone-ttl", l.TombstoneTTL, "how long a subscription removed because its device was reported gone can still be restored")
	fs.DurationVar(&l.LeaseTTL, "lease-ttl", l.LeaseTTL, "how long a task that one process runs at a time (the Graph and EWS subscription managers) waits for a holder that stopped renewing before another process takes it")
	return &l
}
