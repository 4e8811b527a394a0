package monitor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/ingest"
	"github.com/pushproxy/pushproxy/internal/probe"
	"github.com/pushproxy/pushproxy/internal/pushlog"
	"github.com/pushproxy/pushproxy/internal/relayclient"
	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

// Canary defaults.
const (
	DefaultCanaryInterval = time.Minute
	DefaultCanaryTimeout  = time.Minute
	// DefaultCanaryAppID is the app of the canary's device. The relay must
	// serve it with its built-in log provider, which delivers nowhere:
	//   pushctl relay app add --app-id pushproxy-canary --provider log
	DefaultCanaryAppID = "pushproxy-canary"
	// DefaultCanaryDeviceID is the canary device's notification id.
	DefaultCanaryDeviceID = "pushproxy-canary-device"
	// DefaultCanaryLocalPart is the canary user's address before the @:
	// canary@<organization> unless a user is configured.
	DefaultCanaryLocalPart = "canary"
	// CanaryName is the Name of canary results.
	CanaryName = "PushNotifications.Proxy\\EndToEndCanary"
)

// CanaryConfig configures the end-to-end canary: on a schedule, a
// synthetic new-mail event for a canary user goes in through ingest and
// must come out as a push record in PUSH_SENT within Timeout.
//
// The canary user has one device subscription, refreshed at every run,
// with AppID, which the relay must serve with its log provider (pushctl
// relay app add --app-id pushproxy-canary --provider log): the dispatcher
// pushes only to users with devices, and the relay forwards the canary's
// badge to no real device.
type CanaryConfig struct {
	// Interval is how often the canary runs; DefaultCanaryInterval when zero.
	Interval time.Duration
	// Timeout is how long the push may take; DefaultCanaryTimeout when
	// zero. Keep it above the dispatcher's coalescing max delay.
	Timeout time.Duration
	// IngestURL is ingest's base URL (e.g. http://ingest:8025); the event
	// is POSTed to IngestURL/v1/events with IngestToken.
	IngestURL   string
	IngestToken string
	// IngestTokenFile, when set, holds the token instead (first line).
	IngestTokenFile string
	// Publisher, used when IngestURL is empty, publishes the event
	// directly to the MAIL stream (pushctl standalone passes ingest's).
	// Without either the canary does not run.
	Publisher EventPublisher
	// Tenant and User name the canary user; the proxy's organization and
	// canary@<tenant> when empty.
	Tenant string
	User   string
	// AppID and DeviceID are the canary device's subscription.
	AppID    string
	DeviceID string
	// HTTPClient posts to ingest; one with a 10 s timeout when nil.
	HTTPClient *http.Client
	// Diagnose, when set, runs the connectivity probe after a canary push
	// did not come out in time, so that the failure names the real cause
	// (the relay refused the connection, TLS, authentication) instead of
	// "Unknown". The monitor sets it.
	Diagnose func(ctx context.Context) probe.Result
}

// EventPublisher publishes events to the MAIL stream; *ingest.Publisher
// implements it.
type EventPublisher interface {
	Publish(ctx context.Context, evs []events.Event) ([]ingest.Ack, error)
}

// Enabled reports whether the canary has a way in.
func (c CanaryConfig) Enabled() bool { return c.IngestURL != "" || c.Publisher != nil }

func (c CanaryConfig) withDefaults() CanaryConfig {
	if c.Interval == 0 {
		c.Interval = DefaultCanaryInterval
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultCanaryTimeout
	}
	if c.AppID == "" {
		c.AppID = DefaultCanaryAppID
	}
	if c.DeviceID == "" {
		c.DeviceID = DefaultCanaryDeviceID
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	c.IngestURL = strings.TrimRight(c.IngestURL, "/")
	return c
}

// canaryCountCycle bounds the canary's unread count: it alternates 1, 2,
// 1, … so that the canary device's badge stays small and each canary event
// still changes the count.
const canaryCountCycle = 2

// Canary runs the end-to-end check.
type Canary struct {
	cfg      CanaryConfig
	js       jetstream.JetStream
	settings *settings.Store
	subs     *subscriptions.Store
	keyer    *events.Keyer
	now      func() time.Time
}

// NewCanary returns a canary over a provisioned deployment.
func NewCanary(cfg CanaryConfig, js jetstream.JetStream, store *settings.Store, subs *subscriptions.Store, keyer *events.Keyer) *Canary {
	return &Canary{cfg: cfg.withDefaults(), js: js, settings: store, subs: subs, keyer: keyer, now: time.Now}
}

// canaryError is a canary failure with its class.
type canaryError struct {
	class relayclient.Class
	msg   string
	err   error
}

// Error is the operator's message.
func (e *canaryError) Error() string { return e.msg }

// Unwrap returns the underlying error.
func (e *canaryError) Unwrap() error { return e.err }

func failure(class relayclient.Class, err error, format string, args ...any) *canaryError {
	return &canaryError{class: class, msg: fmt.Sprintf(format, args...), err: err}
}

// Run sends one canary event and waits for its push. It never returns an
// error: a failure is a Failed result with a class and a message.
func (c *Canary) Run(ctx context.Context) probe.Result {
	r := probe.Result{Name: CanaryName, At: c.now()}
	latency, err := c.run(ctx, &r)
	r.Latency = latency
	if err != nil {
		r.ResultType = probe.Failed
		var ce *canaryError
		if errors.As(err, &ce) {
			r.Class, r.Error = ce.class, ce.msg
			if ce.err != nil {
				r.Exception = ce.err.Error()
			}
		} else {
			r.Class, r.Error, r.Exception = relayclient.ClassUnknown, "an unknown error occurred: "+err.Error(), err.Error()
		}
		return r
	}
	r.ResultType = probe.Succeeded
	return r
}

func (c *Canary) run(ctx context.Context, r *probe.Result) (time.Duration, error) {
	proxy, err := c.settings.Proxy(ctx)
	if err != nil {
		return 0, failure(relayclient.ClassUnknown, err, "the proxy settings could not be read: %v", err)
	}
	r.Organization, r.URI = proxy.Organization, proxy.URI
	tenant, user := c.cfg.Tenant, c.cfg.User
	if tenant == "" {
		tenant = proxy.Organization
	}
	if !proxy.Enabled || tenant == "" {
		return 0, failure(relayclient.ClassPushNotifications, nil,
			"%s: the push notification proxy is not enabled, so no push can come out; run pushctl proxy enable --organization <your domain>", probe.SettingsMissing)
	}
	if user == "" {
		user = DefaultCanaryLocalPart + "@" + tenant
	}
	userKey := c.keyer.UserKey(tenant, user)

	_, created, err := c.subs.Put(ctx, subscriptions.Subscription{
		Tenant: tenant, User: user, AppID: c.cfg.AppID, DeviceID: c.cfg.DeviceID,
		Platform: subscriptions.PlatformWebApp, Options: subscriptions.OptionEmail,
	})
	if err != nil {
		return 0, failure(relayclient.ClassUnknown, err, "the canary device could not be subscribed: %v", err)
	}
	if created {
		// Give the dispatchers' subscription index a moment to see it.
		if err := service.Sleep(ctx, time.Second); err != nil {
			return 0, err
		}
	}

	count, err := c.nextCount(ctx, tenant, user)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	outcomes, stop, err := c.watch(ctx, userKey)
	if err != nil {
		return 0, err
	}
	defer stop()

	start := c.now()
	ev := events.Event{Tenant: tenant, User: user, Mailbox: events.Inbox, Kind: events.KindNew, Unread: events.IntPtr(count),
		ChangeID: "canary:" + uuid.NewString(), OccurredAt: start.UTC(), Source: events.SourceCanary}
	ev.Normalize()
	seq, err := c.publish(ctx, ev)
	if err != nil {
		return 0, err
	}
	for {
		select {
		case <-ctx.Done():
			if c.cfg.Diagnose != nil {
				dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.Timeout)
				pr := c.cfg.Diagnose(dctx)
				cancel()
				if !pr.Succeeded() {
					return 0, failure(pr.Class, errors.New(pr.Exception),
						"the canary event (MAIL sequence %d) did not come out as a push within %s, and the connectivity probe fails too: %s",
						seq, c.cfg.Timeout, pr.Error)
				}
			}
			return 0, failure(relayclient.ClassUnknown, ctx.Err(),
				"the canary event (MAIL sequence %d, unread %d) did not come out as a push within %s, though the relay answers the probe; check that the dispatchers run and keep up (pushctl status) and that the relay accepts pushes for app %s",
				seq, count, c.cfg.Timeout, c.cfg.AppID)
		case o := <-outcomes:
			switch {
			case o.sent != nil && o.sent.LastSeq >= seq:
				return c.now().Sub(start), nil
			case o.dead != nil && covers(o.dead.Sequences, seq):
				return 0, failure(relayclient.ClassPushNotifications, errors.New(o.dead.LastError),
					"the canary push was dead-lettered (%s): %s; the relay must serve app %s with its log provider (pushctl relay app add --app-id %s --provider log)",
					o.dead.Reason, o.dead.LastError, c.cfg.AppID, c.cfg.AppID)
			}
		}
	}
}

// nextCount is one more than the unread count of the canary user's last
// event in the MAIL stream (wrapping at canaryCountCycle). Every canary
// event carries an authoritative count, so each one changes the count the
// previous one set, even when earlier canary events are still waiting for
// the dispatcher, and the dispatcher never skips it as unchanged.
func (c *Canary) nextCount(ctx context.Context, tenant, user string) (int, error) {
	stream, err := c.js.Stream(ctx, broker.StreamMail)
	if err != nil {
		return 0, fmt.Errorf("opening stream %s: %w", broker.StreamMail, err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, c.keyer.StoredSubjectFilter(tenant, user))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading the canary's last event: %w", err)
	}
	ev, err := events.Decode(msg.Data)
	if err != nil || ev.Unread == nil {
		return 1, nil
	}
	return *ev.Unread%canaryCountCycle + 1, nil
}

// outcome is a push record or a dead letter of the canary user.
type outcome struct {
	sent *pushlog.SentRecord
	dead *pushlog.DeadLetter
}

// watch follows the canary user's new PUSH_SENT records and dead letters.
func (c *Canary) watch(ctx context.Context, userKey string) (<-chan outcome, func(), error) {
	out := make(chan outcome, 16)
	var stops []func()
	stopAll := func() {
		for _, s := range stops {
			s()
		}
	}
	for _, w := range []struct {
		stream, subject string
		decode          func([]byte) (outcome, error)
	}{
		{broker.StreamSent, pushlog.SentSubject(userKey), func(b []byte) (outcome, error) {
			var rec pushlog.SentRecord
			return outcome{sent: &rec}, json.Unmarshal(b, &rec)
		}},
		{broker.StreamDead, pushlog.DeadSubject(userKey), func(b []byte) (outcome, error) {
			var dl pushlog.DeadLetter
			return outcome{dead: &dl}, json.Unmarshal(b, &dl)
		}},
	} {
		cons, err := c.js.OrderedConsumer(ctx, w.stream, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{w.subject}, DeliverPolicy: jetstream.DeliverNewPolicy,
		})
		if err != nil {
			stopAll()
			return nil, nil, fmt.Errorf("watching stream %s: %w", w.stream, err)
		}
		decode := w.decode
		cc, err := cons.Consume(func(msg jetstream.Msg) {
			o, err := decode(msg.Data())
			if err != nil {
				return
			}
			select {
			case out <- o:
			case <-ctx.Done():
			}
		})
		if err != nil {
			stopAll()
			return nil, nil, fmt.Errorf("watching stream %s: %w", w.stream, err)
		}
		stops = append(stops, cc.Stop)
	}
	return out, stopAll, nil
}

func covers(seqs []uint64, seq uint64) bool {
	for _, s := range seqs {
		if s == seq {
			return true
		}
	}
	return false
}

// publish sends the event through ingest and returns its MAIL sequence.
func (c *Canary) publish(ctx context.Context, ev events.Event) (uint64, error) {
	if c.cfg.IngestURL == "" {
		acks, err := c.cfg.Publisher.Publish(ctx, []events.Event{ev})
		if err != nil {
			return 0, failure(relayclient.ClassUnknown, err, "the canary event could not be published to the MAIL stream: %v", err)
		}
		return acks[0].Seq, nil
	}
	body, err := json.Marshal(nativeEvent{V: ev.Version, Tenant: ev.Tenant, User: ev.User, Mailbox: ev.Mailbox, Kind: ev.Kind,
		Unread: ev.Unread, Count: ev.Count, ChangeID: ev.ChangeID, OccurredAt: ev.OccurredAt})
	if err != nil {
		return 0, fmt.Errorf("encoding the canary event: %w", err)
	}
	url := c.cfg.IngestURL + "/v1/events"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, failure(relayclient.ClassPushNotifications, err, "the ingest URL %s is not valid: %v", c.cfg.IngestURL, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.cfg.IngestToken)
	resp, err := c.cfg.HTTPClient.Do(req)
	if err != nil {
		return 0, failure(relayclient.ClassNetworking, err, "ingest at %s could not be reached: %v; check --ingest-url and that ingest runs", c.cfg.IngestURL, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return 0, failure(relayclient.ClassAuthentication, fmt.Errorf("POST %s: %s", url, resp.Status),
			"ingest at %s refused the canary's credentials (%s); set --ingest-token to one of ingest's --native-token values", c.cfg.IngestURL, resp.Status)
	case resp.StatusCode/100 != 2:
		return 0, failure(relayclient.ClassUnknown, fmt.Errorf("POST %s: %s: %s", url, resp.Status, bytes.TrimSpace(data)),
			"ingest at %s did not take the canary event: %s", c.cfg.IngestURL, resp.Status)
	}
	var res ingest.Result
	if err := json.Unmarshal(data, &res); err != nil || len(res.Events) != 1 || res.Events[0].Seq == 0 {
		return 0, failure(relayclient.ClassUnknown, fmt.Errorf("POST %s: unexpected answer %q", url, bytes.TrimSpace(data)),
			"ingest at %s answered the canary event without its stream sequence; check --ingest-url points at ingest", c.cfg.IngestURL)
	}
	return res.Events[0].Seq, nil
}

// nativeEvent is an event in ingest's native API schema (version 1),
// which has no source: ingest records the source of the endpoint.
type nativeEvent struct {
	V          int         `json:"v"`
	Tenant     string      `json:"tenant"`
	User       string      `json:"user"`
	Mailbox    string      `json:"mailbox"`
	Kind       events.Kind `json:"kind"`
	Unread     *int        `json:"unread,omitempty"`
	Count      int         `json:"count"`
	ChangeID   string      `json:"change_id"`
	OccurredAt time.Time   `json:"occurred_at"`
}
