// Package probe is the connectivity probe to the relay, the equivalent of
// Exchange's Invoke-MonitoringProbe
// PushNotifications.Proxy\PushNotificationsEnterpriseConnectivityProbe: it
// reads the proxy settings, gets an S2S token and sends the monitoring
// notification, which the relay answers without forwarding it to a device.
// A failure is classified as Authentication, Networking, PushNotifications
// (configuration) or Unknown, with a message that says what to fix.
//
// Results are printed like Exchange's Format-List (see [Result.Format]),
// published as JSON to the PROBES stream and observed by [Metrics].
package probe

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/pushproxy/pushproxy/internal/delivery"
	"github.com/pushproxy/pushproxy/internal/relayclient"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/tokens/onprem"
)

// ResultType is the outcome of a probe, with Exchange's names.
type ResultType string

// Outcomes.
const (
	Succeeded ResultType = "Succeeded"
	Failed    ResultType = "Failed"
)

// Name is the probe's name as Exchange knew it.
const Name = `PushNotifications.Proxy\PushNotificationsEnterpriseConnectivityProbe`

// Result is the outcome of one probe run (or, with Name "canary", of one
// canary run of the monitor).
type Result struct {
	// Name says which check this is.
	Name string
	// ResultType is Succeeded or Failed.
	ResultType ResultType
	// Error is the operator's message: what failed and what to fix.
	// Empty on success.
	Error string
	// Exception is the underlying error as it was raised. Empty on success.
	Exception string
	// Class is the failure class: Authentication, Networking,
	// PushNotifications or Unknown. Empty on success.
	Class relayclient.Class
	// Latency is how long the relay took to answer (for the canary: from
	// the event's publish to its push record). Zero when nothing was sent.
	Latency time.Duration
	// At is when the run started.
	At time.Time
	// Organization and URI are the proxy settings the run used.
	Organization string
	URI          string
}

// Succeeded reports whether the run succeeded.
func (r Result) Succeeded() bool { return r.ResultType == Succeeded }

// resultJSON is the JSON form of a Result: Exchange-style field names and
// the latency in milliseconds.
type resultJSON struct {
	Name               string            `json:"ResultName"`
	ResultType         ResultType        `json:"ResultType"`
	Error              string            `json:"Error"`
	Exception          string            `json:"Exception"`
	Class              relayclient.Class `json:"FailureClass,omitempty"`
	LatencyMs          float64           `json:"LatencyMs"`
	ExecutionStartTime time.Time         `json:"ExecutionStartTime"`
	Organization       string            `json:"Organization,omitempty"`
	URI                string            `json:"Uri,omitempty"`
}

// MarshalJSON encodes r with Exchange-style names and LatencyMs.
func (r Result) MarshalJSON() ([]byte, error) {
	return json.Marshal(resultJSON{
		Name: r.Name, ResultType: r.ResultType, Error: r.Error, Exception: r.Exception, Class: r.Class,
		LatencyMs:          float64(r.Latency) / float64(time.Millisecond),
		ExecutionStartTime: r.At.UTC(), Organization: r.Organization, URI: r.URI,
	})
}

// UnmarshalJSON decodes what MarshalJSON encodes.
func (r *Result) UnmarshalJSON(data []byte) error {
	var j resultJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	*r = Result{
		Name: j.Name, ResultType: j.ResultType, Error: j.Error, Exception: j.Exception, Class: j.Class,
		Latency: time.Duration(j.LatencyMs * float64(time.Millisecond)),
		At:      j.ExecutionStartTime, Organization: j.Organization, URI: j.URI,
	}
	return nil
}

// Format writes the result as Exchange's Format-List printed it:
//
//	ResultType : Failed
//	Error      : Push Notifications settings could not be found: ...
//	Exception  : ...
func (r Result) Format(w io.Writer) error {
	fields := [][2]string{
		{"ResultType", string(r.ResultType)},
		{"Error", r.Error},
		{"Exception", r.Exception},
	}
	width := 0
	for _, f := range fields {
		width = max(width, len(f[0]))
	}
	var b strings.Builder
	for _, f := range fields {
		line := fmt.Sprintf("%-*s : %s", width, f[0], oneLine(f[1]))
		b.WriteString(strings.TrimRight(line, " "))
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// oneLine flattens a message to one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// ProxySource gives the proxy settings; *settings.Store implements it.
type ProxySource interface {
	Proxy(ctx context.Context) (settings.Proxy, error)
}

// Publisher sends a batch once; *relayclient.Client implements it.
type Publisher interface {
	Publish(ctx context.Context, uri string, batch []relayproto.Notification) (relayproto.Response, error)
}

// Deps is what a probe run needs.
type Deps struct {
	// Settings gives the proxy settings. Required.
	Settings ProxySource
	// Tokens gives the S2S token. Required.
	Tokens relayclient.TokenSource
	// Relay sends the monitoring notification, once. Required.
	Relay Publisher
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// SettingsMissing starts the Error of a configuration failure, as
// Exchange's probe worded it.
const SettingsMissing = "Push Notifications settings could not be found"

// Run runs the probe once. It never returns an error: every failure is a
// Failed result with its class and message.
func Run(ctx context.Context, deps Deps) Result {
	now := deps.Now
	if now == nil {
		now = time.Now
	}
	r := Result{Name: Name, At: now()}

	proxy, err := deps.Settings.Proxy(ctx)
	if err != nil {
		return r.fail(relayclient.ClassUnknown,
			"an unknown error occurred: the proxy settings could not be read from NATS; check the NATS connection (pushctl status)", err)
	}
	r.Organization, r.URI = proxy.Organization, proxy.URI
	if msg, ok := missingSettings(proxy); !ok {
		return r.fail(relayclient.ClassPushNotifications, SettingsMissing+": "+msg,
			fmt.Errorf("proxy settings: Enabled=%t Organization=%q Uri=%q", proxy.Enabled, proxy.Organization, proxy.URI))
	}

	if _, err := deps.Tokens.Token(ctx); err != nil {
		return r.failWith(&relayclient.Error{Class: relayclient.ClassAuthentication, URI: proxy.URI, Err: fmt.Errorf("getting an S2S token: %w", err)})
	}

	start := now()
	push := delivery.Push{Notifications: []relayproto.Notification{relayproto.ProbeNotification(uuid.NewString(), start)}}
	// One attempt, without waiting out back-pressure: the probe reports
	// what the relay says now.
	resp, err := deps.Relay.Publish(ctx, proxy.URI, push.Notifications)
	r.Latency = now().Sub(start)
	if err != nil {
		return r.failWith(err)
	}
	if err := checkAnswer(delivery.Classify(push, resp.Results)); err != nil {
		return r.fail(relayclient.ClassPushNotifications,
			fmt.Sprintf("the push notification service at %s did not accept the monitoring notification: %v; check that the proxy Uri points at a pushproxy relay (pushctl proxy show) and the relay's logs", proxy.URI, err), err)
	}
	r.ResultType = Succeeded
	return r
}

// missingSettings says what is missing from the proxy settings for pushes
// to flow, and how to fix it; ok is true when nothing is.
func missingSettings(p settings.Proxy) (msg string, ok bool) {
	fix := "run pushctl proxy enable --organization <your domain> [--uri <relay URI>]"
	switch {
	case !p.Enabled:
		return "the push notification proxy is not enabled; " + fix, false
	case p.Organization == "":
		return "no organization is configured for the push notification proxy; " + fix, false
	case p.URI == "":
		return "no service URI is configured for the push notification proxy; " + fix, false
	}
	return "", true
}

// checkAnswer accepts an answer, read by the delivery path's Classify,
// that has no result for the monitoring device or says it was delivered.
func checkAnswer(a delivery.Answer) error {
	for _, group := range []struct {
		class   relayproto.Class
		devices []delivery.Device
	}{{relayproto.ClassDeviceGone, a.Gone}, {relayproto.ClassDeviceGone, a.Kept}, {relayproto.ClassAppFault, a.AppFaults}, {relayproto.ClassTransient, a.Transient}} {
		if len(group.devices) > 0 {
			return fmt.Errorf("device class %q: %s", group.class, group.devices[0].Reason)
		}
	}
	return nil
}

func (r Result) fail(class relayclient.Class, msg string, err error) Result {
	r.ResultType = Failed
	r.Class = class
	r.Error = msg
	if err != nil {
		r.Exception = err.Error()
	}
	return r
}

func (r Result) failWith(err error) Result {
	class, msg := relayclient.Classify(err)
	return r.fail(class, msg, err)
}

// NewDeps returns the Deps of a deployment: the settings in store, tokens
// signed with the current certificate (see Tokens), and a relay client that
// makes single attempts bounded by timeout, without a circuit breaker so
// that every probe really reaches out.
func NewDeps(store *settings.Store, certDir string, timeout time.Duration) Deps {
	tokens := onprem.NewSource(store, certDir)
	client := relayclient.New(relayclient.Config{Tokens: tokens, Timeout: timeout, BreakerFailures: -1})
	return Deps{Settings: store, Tokens: tokens, Relay: client}
}
