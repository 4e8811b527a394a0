package monitor

import (
	"flag"
	"fmt"
	"os"
	"strings"
)

// DefaultHTTPAddr is where cmd/monitor serves /healthz, /readyz and /metrics.
const DefaultHTTPAddr = ":8029"

// Flags registers the monitor's flags on fs and returns the config they
// fill. It leaves out HTTPAddr, which cmd/monitor registers as --http-addr
// and pushctl standalone does not need.
func Flags(fs *flag.FlagSet) *Config {
	c := &Config{}
	fs.DurationVar(&c.ProbeInterval, "probe-interval", DefaultProbeInterval, "how often the connectivity probe runs (negative: never)")
	fs.DurationVar(&c.ProbeTimeout, "probe-timeout", DefaultProbeTimeout, "how long the probe waits for the relay's answer")
	fs.StringVar(&c.CertDir, "cert-dir", "", "folder of the S2S certificates (default: the one in the auth configuration)")
	fs.DurationVar(&c.CertCheckInterval, "cert-check-interval", DefaultCertCheckInterval, "how often the certificates' expiry is checked (alert within 30 days; negative: never)")
	fs.DurationVar(&c.DeadLetterCheckInterval, "dead-letter-check-interval", DefaultDeadLetterCheckInterval, "how often the dead letters waiting in PUSH_DEAD are counted (alert PushDeadLetters until they are redriven or discarded; negative: never)")
	fs.DurationVar(&c.Canary.Interval, "canary-interval", DefaultCanaryInterval, "how often the end-to-end canary runs (negative: never)")
	fs.DurationVar(&c.Canary.Timeout, "canary-timeout", DefaultCanaryTimeout, "how long the canary's event may take to come out as a push; keep it above the dispatchers' coalescing max delay")
	fs.StringVar(&c.Canary.IngestURL, "ingest-url", "", "ingest's base URL for the canary, e.g. http://ingest:8025 (without it the canary is off)")
	fs.StringVar(&c.Canary.IngestToken, "ingest-token", "", "a native Bearer token of ingest (one of its --native-token values) for the canary")
	fs.StringVar(&c.Canary.IngestTokenFile, "ingest-token-file", "", "file holding the ingest token (instead of --ingest-token)")
	fs.StringVar(&c.Canary.Tenant, "canary-tenant", "", "the canary user's organization (default: the proxy's organization)")
	fs.StringVar(&c.Canary.User, "canary-user", "", "the canary user's address (default: canary@<tenant>)")
	fs.StringVar(&c.Canary.AppID, "canary-app-id", DefaultCanaryAppID, "app of the canary's device; register it at the relay with the log provider: pushctl relay app add --app-id "+DefaultCanaryAppID+" --provider log")
	fs.StringVar(&c.AlertmanagerURL, "alertmanager-url", "", "Prometheus Alertmanager base URL to post alerts to (POST /api/v2/alerts), e.g. http://alertmanager:9093")
	fs.DurationVar(&c.AlertResend, "alert-resend", 0, "how often firing alerts are posted to the Alertmanager again, below its resolve_timeout (default 1m; negative: never)")
	fs.StringVar(&c.GeneratorURL, "generator-url", "", "URL that alerts link to as their source, e.g. this monitor's /metrics")
	return c
}

// readTokenFile reads a token from the first line of path.
func readTokenFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the ingest token file: %w", err)
	}
	token, _, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
	if token = strings.TrimSpace(token); token == "" {
		return "", fmt.Errorf("the ingest token file %s is empty", path)
	}
	return token, nil
}
