package ews

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/httpjson"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// MediaTypes are the Content-Types of a SendNotification request. Exchange
// sends text/xml; charset=utf-8 (SOAP 1.1).
var MediaTypes = []string{"text/xml", "application/xml"}

// KeyParam is the query parameter that carries Config.Key.
const KeyParam = "key"

// DefaultRetryAfter is the Retry-After of a 503 fault that has none:
// Exchange's first retry comes after 30 seconds anyway.
const DefaultRetryAfter = 30 * time.Second

// SubscriptionError is a response message of class Error: Exchange reports
// that it cannot go on with a subscription (for example ResponseCode
// ErrorReadEventsFailed: "the subscription must be created again").
type SubscriptionError struct {
	SubscriptionID string
	// Subscription is the registry's entry; Known is false when the
	// registry does not know SubscriptionID.
	Subscription Subscription
	Known        bool
	ResponseCode string
	MessageText  string
}

// Config configures a Source.
type Config struct {
	// Subscriptions maps a SubscriptionId to a user. Required.
	Subscriptions SubscriptionRegistry
	// Key, when set, must be given as the query parameter "key" of every
	// request: put it in the URL of the push subscription. Exchange sends
	// push notifications without credentials, so this and the secrecy of
	// subscription ids are what keep strangers from posting events. Without
	// it every request is let through to the registry check.
	Key string
	// VerifyKey, when set, checks a key that is not Key: ok when it is a
	// known secret, with the tenants whose subscriptions it may report for
	// (nil: any). Ingest passes the credentials that pushctl credentials
	// create --kind ews makes; a notification of a subscription of another
	// tenant is then answered 403 and nothing of the request is stored.
	VerifyKey func(key string) (tenants []string, ok bool)
	// RequireKey refuses requests without a known key even when Key is
	// empty (only VerifyKey's credentials are accepted then).
	RequireKey bool
	// OnSubscriptionError, when set, is called for every response message
	// of class Error, e.g. to create the subscription again. It runs on
	// the request's goroutine: keep it short.
	OnSubscriptionError func(ctx context.Context, e SubscriptionError)
	// Observe, when set, is told of every notification of a subscription
	// the registry knows, once its events are stored (and so just before
	// the answer): the subscription, the newest watermark the
	// notification carries (empty when none does) and when it was
	// accepted. Set it to Manager.Observe, which keeps the watermark a
	// subscription is created again from and notices silent ones. It runs
	// on the request's goroutine: keep it short.
	Observe func(ctx context.Context, subscriptionID, watermark string, at time.Time)
	// Now is the clock of Observe; time.Now when nil.
	Now func() time.Time
	// Log receives a line per subscription error and unknown subscription.
	Log zerolog.Logger
	// Metrics, when set, receives the source's metrics.
	Metrics prometheus.Registerer
}

// Source is the EWS push notification source for ingest. It provides what
// an ingest.Source needs (Authenticate and Challenge for Auth, Parse,
// Respond) and Wrap, which must wrap the handler ingest builds:
//
//	src, err := ews.NewSource(ews.Config{Subscriptions: registry, Key: key, Metrics: reg, Log: log})
//	h := srv.SourceHandler(ingest.Source{
//		Name:       events.SourceEWS,
//		Auth:       src,
//		MediaTypes: ews.MediaTypes,
//		Parse:      src.Parse,
//		Respond:    func(w http.ResponseWriter, r *http.Request, _ *ingest.Result) { src.Respond(w, r) },
//	})
//	srv.Handle("POST /v1/ews", src.Wrap(h))
//
// The answer is a SendNotificationResult with SubscriptionStatus OK, or
// Unsubscribe when the registry knows none of the request's subscriptions
// (Exchange then ends the subscription). Errors are SOAP 1.1 faults
// (text/xml) with ingest's status codes: 400 for a body that is not a
// SendNotification request, 401 for a missing or wrong key, 413, 415, 422
// for an event that fails validation, 503 (with Retry-After) when the
// registry or JetStream is unavailable. Exchange treats any answer but 200
// as a failed delivery and retries from 30 seconds, doubling, until the
// subscription's StatusFrequency has passed; then the subscription ends.
type Source struct {
	cfg     Config
	key     sources.URLKey
	metrics *metrics
}

// NewSource checks cfg and registers the metrics.
func NewSource(cfg Config) (*Source, error) {
	if cfg.Subscriptions == nil {
		return nil, errors.New("EWS source: a subscription registry is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	return &Source{cfg: cfg, key: sources.NewURLKey(cfg.Key), metrics: m}, nil
}

// Authenticate checks the key of the request's URL, in constant time; it
// accepts every request when no key is configured.
//
// A key that VerifyKey knows is accepted for its tenants: Parse refuses a
// notification of another tenant's subscription. Without any key
// configured and without RequireKey, a request with no key or an unknown
// one is accepted for any tenant, as before credentials existed.
func (s *Source) Authenticate(r *http.Request) bool {
	key := r.URL.Query().Get(KeyParam)
	if s.key.Matches(key) {
		return true
	}
	if s.cfg.VerifyKey != nil && key != "" {
		if tenants, ok := s.cfg.VerifyKey(key); ok {
			if st := exchangeOf(r); st != nil {
				st.tenants, st.scoped = tenants, tenants != nil
			}
			return true
		}
	}
	return !s.key.Set() && !s.cfg.RequireKey
}

// Challenge is the WWW-Authenticate value of a 401 answer: the key goes in
// the URL, so there is no scheme that Exchange could answer.
func (s *Source) Challenge() string { return `Key realm="pushproxy", param="` + KeyParam + `"` }

// Parse reads the events of a SendNotification request for ingest. A body
// that is not one is a 400 error; a charset other than UTF-8 a 415; a
// registry failure a 503. Messages about subscriptions the registry does
// not know yield no events (Respond then answers Unsubscribe), and so do
// messages of class Error, which go to Config.OnSubscriptionError.
func (s *Source) Parse(r *http.Request, body []byte) ([]sources.Item, error) {
	st := exchangeOf(r)
	if st == nil {
		return nil, &httpjson.Error{Status: http.StatusInternalServerError, Code: "internal",
			Message: "the EWS route is not wrapped with ews.Source.Wrap"}
	}
	if err := checkCharset(r.Header.Get("Content-Type")); err != nil {
		return nil, err
	}
	req, err := Decode(body)
	if err != nil {
		return nil, sources.Malformed("%v", err)
	}
	ctx := r.Context()
	var (
		items          []sources.Item
		known, unknown int
	)
	for i := range req.Messages {
		m := &req.Messages[i]
		if m.SubscriptionID == "" {
			s.subscriptionError(ctx, m, Subscription{}, false)
			continue
		}
		sub, err := s.cfg.Subscriptions.Lookup(ctx, m.SubscriptionID)
		switch {
		case errors.Is(err, ErrUnknownSubscription):
			unknown++
			s.metrics.unknown.Inc()
			s.cfg.Log.Debug().Str("subscription", m.SubscriptionID).Msg("EWS notification for an unknown subscription: answering Unsubscribe")
		case err != nil:
			return nil, &httpjson.Error{Status: http.StatusServiceUnavailable, Code: "unavailable",
				Message: "the EWS subscription registry is unavailable (" + err.Error() + "); retry later"}
		default:
			known++
		}
		if m.ResponseClass == ClassError {
			s.subscriptionError(ctx, m, sub, err == nil)
			continue
		}
		s.metrics.countEvents(m.Notification)
		if err != nil {
			continue
		}
		if st.scoped && !slices.Contains(st.tenants, sub.Tenant) {
			// A key belongs to its tenants' subscriptions: a notification
			// of another's is a forgery or a misconfiguration, and nothing
			// of the request is stored.
			return nil, &httpjson.Error{Status: http.StatusForbidden, Code: "forbidden", Field: KeyParam,
				Message: "this key may not report for tenant " + sub.Tenant + "; nothing was stored"}
		}
		for _, e := range Map(m.Notification, sub) {
			items = append(items, sources.Item{Event: e})
		}
		st.observed = append(st.observed, observation{subscriptionID: m.SubscriptionID, watermark: newestWatermark(m.Notification)})
	}
	if known == 0 && unknown > 0 {
		st.status = StatusUnsubscribe
	}
	return items, nil
}

// Respond writes the SendNotificationResult once the events are stored.
func (s *Source) Respond(w http.ResponseWriter, r *http.Request) {
	status := StatusOK
	if st := exchangeOf(r); st != nil && st.status != "" {
		status = st.status
	}
	s.metrics.answers.WithLabelValues(string(status)).Inc()
	if st := exchangeOf(r); st != nil && s.cfg.Observe != nil {
		at := s.cfg.Now()
		for _, o := range st.observed {
			s.cfg.Observe(r.Context(), o.subscriptionID, o.watermark, at)
		}
	}
	writeSOAP(w, http.StatusOK, ResultEnvelope(status))
}

// newestWatermark is the watermark of the last event of n that has one:
// Exchange lists the events in the order they happened.
func newestWatermark(n *Notification) string {
	if n == nil {
		return ""
	}
	for i := len(n.Events) - 1; i >= 0; i-- {
		if wm := n.Events[i].Watermark; wm != "" {
			return wm
		}
	}
	return ""
}

func (s *Source) subscriptionError(ctx context.Context, m *Message, sub Subscription, known bool) {
	code := "unknown_subscription"
	if known {
		code = responseCodeLabel(m.ResponseCode)
	}
	s.metrics.subscriptionErrors.WithLabelValues(code).Inc()
	ev := s.cfg.Log.Warn().Str("subscription", m.SubscriptionID).Str("code", sources.Clip(m.ResponseCode)).Bool("known", known)
	if known {
		ev = ev.Str("tenant", sub.Tenant).Str("user", sub.User)
	}
	ev.Msg("Exchange reports an error for an EWS push subscription")
	if s.cfg.OnSubscriptionError != nil {
		s.cfg.OnSubscriptionError(ctx, SubscriptionError{
			SubscriptionID: m.SubscriptionID,
			Subscription:   sub,
			Known:          known,
			ResponseCode:   m.ResponseCode,
			MessageText:    m.MessageText,
		})
	}
}

// exchange is what Parse tells Respond about one request.
type exchange struct {
	status Status
	// scoped: the request's key may report only for tenants.
	scoped  bool
	tenants []string
	// observed are the notifications of known subscriptions, for
	// Config.Observe.
	observed []observation
}

// observation is one notification of a known subscription.
type observation struct {
	subscriptionID string
	watermark      string
}

type exchangeKey struct{}

func exchangeOf(r *http.Request) *exchange {
	st, _ := r.Context().Value(exchangeKey{}).(*exchange)
	return st
}

// Wrap prepares each request for Parse and Respond and turns the JSON
// errors of ingest into SOAP 1.1 faults with the same status and headers:
// faultcode s:Client for 4xx, s:Server for 5xx, faultstring the error's
// message. A 503 without Retry-After gets DefaultRetryAfter.
func (s *Source) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.WithContext(context.WithValue(r.Context(), exchangeKey{}, &exchange{}))
		fw := &faultWriter{ResponseWriter: w}
		next.ServeHTTP(fw, r)
		fw.finish()
	})
}

// faultWriter passes a successful answer through and holds back an error
// answer to rewrite it as a SOAP fault.
type faultWriter struct {
	http.ResponseWriter
	status int
	held   bytes.Buffer
}

func (f *faultWriter) WriteHeader(status int) {
	if f.status != 0 {
		return
	}
	f.status = status
	if status < http.StatusBadRequest {
		f.ResponseWriter.WriteHeader(status)
	}
}

func (f *faultWriter) Write(b []byte) (int, error) {
	if f.status == 0 {
		f.WriteHeader(http.StatusOK)
	}
	if f.status < http.StatusBadRequest {
		return f.ResponseWriter.Write(b)
	}
	if f.held.Len() < 64<<10 {
		f.held.Write(b)
	}
	return len(b), nil
}

// finish writes the fault of a held error answer.
func (f *faultWriter) finish() {
	if f.status < http.StatusBadRequest {
		return
	}
	reason := http.StatusText(f.status)
	var body struct {
		Error *httpjson.Error `json:"error"`
	}
	if json.Unmarshal(f.held.Bytes(), &body) == nil && body.Error != nil && body.Error.Message != "" {
		reason = body.Error.Message
	}
	code := FaultClient
	if f.status >= http.StatusInternalServerError {
		code = FaultServer
	}
	h := f.Header()
	h.Del("Content-Length")
	if f.status == http.StatusServiceUnavailable && h.Get("Retry-After") == "" {
		h.Set("Retry-After", strconv.Itoa(int(DefaultRetryAfter/time.Second)))
	}
	writeSOAP(f.ResponseWriter, f.status, FaultEnvelope(code, reason))
}

// checkCharset accepts a Content-Type charset of UTF-8 (or its subset
// US-ASCII), or none.
func checkCharset(header string) error {
	_, params, err := mime.ParseMediaType(header)
	if err != nil {
		return nil
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "us-ascii") {
		return &httpjson.Error{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type",
			Message: fmt.Sprintf("charset %q is not accepted; Exchange sends utf-8", sources.Clip(cs))}
	}
	return nil
}

// responseCodeLabel keeps label values to well-formed codes. It is only used
// for subscriptions the registry knows, whose notifications come from
// Exchange, so the set of values stays that of Exchange's response codes.
func responseCodeLabel(code string) string {
	if code == "" || len(code) > 64 {
		return "other"
	}
	for _, c := range code {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return "other"
		}
	}
	return code
}
