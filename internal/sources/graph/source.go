package graph

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/httpjson"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// MediaTypes are the Content-Types of a notification delivery.
var MediaTypes = []string{"application/json"}

// KeyParam is the query parameter that carries Config.Key.
const KeyParam = "key"

// ValidationParam is the query parameter of Graph's validation request.
const ValidationParam = "validationToken"

// MaxValidationToken bounds the validation token echoed back, in bytes.
const MaxValidationToken = 1024

// PublishTimeout is the Source.Timeout to give ingest for this source:
// Graph waits 3 seconds for an answer and flags an endpoint that often
// takes longer as slow, then drops its notifications; answering 503 a
// little earlier makes Graph retry instead.
const PublishTimeout = 2500 * time.Millisecond

// Lifecycle is a lifecycle notification whose clientState matched.
type Lifecycle struct {
	// Event is reauthorizationRequired, subscriptionRemoved or missed.
	Event          string
	SubscriptionID string
	TenantID       string
	// Expires is the subscription's expiration, zero when absent or unreadable.
	Expires time.Time
}

// Config configures a Source.
type Config struct {
	// ClientStates are the secrets given as clientState when creating the
	// subscriptions; several, so that one can be rotated. At least one is
	// required. One written TENANT[|TENANT...]:SECRET reports only for
	// those tenants; a bare SECRET for any tenant of the directory.
	ClientStates []string
	// Verify, when set, checks a clientState that none of ClientStates
	// is: ok when it is a known secret, with the tenants it may report
	// for (nil: any). Ingest passes the credentials that pushctl
	// credentials create --kind graph makes. ClientStates or Verify is
	// required.
	Verify func(clientState string) (tenants []string, ok bool)
	// Users maps the user of a resource to a tenant and address. Required.
	Users UserDirectory
	// DefaultMailbox is the mailbox of a message whose resource names no
	// folder (Graph usually writes Users/{id}/Messages/{id} even for a
	// subscription on one folder). Default events.Inbox: subscribe to
	// users/{id}/mailFolders('inbox')/messages so that this is true.
	DefaultMailbox string
	// Key, when set, must be given as the query parameter "key" of every
	// request: put it in the notificationUrl and lifecycleNotificationUrl.
	Key string
	// MaxNotifications bounds the notifications of one request
	// (DefaultMaxNotifications when 0).
	MaxNotifications int
	// OnLifecycle, when set, is called for every lifecycle notification
	// whose clientState matched, e.g. to reauthorize or recreate the
	// subscription. It runs on the request's goroutine: keep it short
	// (Graph waits at most 3 seconds for the answer).
	OnLifecycle func(ctx context.Context, l Lifecycle)
	// Log receives a line per lifecycle notification and per notification
	// with a wrong clientState (other dropped ones at debug level).
	Log zerolog.Logger
	// Metrics, when set, receives the source's metrics.
	Metrics prometheus.Registerer
}

// Source is the Microsoft Graph change notification source for ingest. It
// provides what an ingest.Source needs (Authenticate and Challenge for
// Auth, Parse, Respond) and Handshake, which answers the validation request
// before ingest's handler:
//
//	src, err := graph.NewSource(graph.Config{ClientStates: secrets, Users: dir, Metrics: reg, Log: log})
//	h := srv.SourceHandler(ingest.Source{
//		Name:       events.SourceGraph,
//		Auth:       src,
//		MediaTypes: graph.MediaTypes,
//		Timeout:    graph.PublishTimeout,
//		Parse:      src.Parse,
//		Respond:    func(w http.ResponseWriter, r *http.Request, _ *ingest.Result) { src.Respond(w, r) },
//	})
//	srv.Handle("POST /v1/graph", src.Handshake(h))
//
// Notifications whose clientState matches none of Config.ClientStates are
// dropped and counted; when none matches, the request is answered 401 (a
// forgery, or a secret that was rotated away). Notifications that cannot
// become events (a resource that is not a message, a user the directory
// does not know, an unknown changeType) are dropped and counted too rather
// than refused: Graph would retry them for 4 hours to no avail.
type Source struct {
	cfg    Config
	states [][sha256.Size]byte
	// tenants[i] are the tenants states[i] may report for; nil: any.
	tenants [][]string
	key     sources.URLKey
	metrics *metrics
}

// NewSource checks cfg and registers the metrics.
func NewSource(cfg Config) (*Source, error) {
	if cfg.Users == nil {
		return nil, errors.New("graph source: a user directory is required")
	}
	s := &Source{cfg: cfg, key: sources.NewURLKey(cfg.Key)}
	for _, cs := range cfg.ClientStates {
		tenants, secret := splitClientState(cs)
		if secret != "" {
			s.states = append(s.states, sha256.Sum256([]byte(secret)))
			s.tenants = append(s.tenants, tenants)
		}
	}
	if len(s.states) == 0 && cfg.Verify == nil {
		return nil, errors.New("graph source: at least one clientState secret is required")
	}
	if s.cfg.DefaultMailbox == "" {
		s.cfg.DefaultMailbox = events.Inbox
	}
	m, err := newMetrics(cfg.Metrics)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	return s, nil
}

// Authenticate checks the key of the request's URL, in constant time; it
// accepts every request when no key is configured. Graph sends no
// credentials: the clientState in the body is what Parse checks.
func (s *Source) Authenticate(r *http.Request) bool {
	return keyMatches(r, s.key)
}

// keyMatches reports whether the request carries the key as its key
// parameter; any request does when no key is configured.
func keyMatches(r *http.Request, key sources.URLKey) bool {
	return !key.Set() || key.Matches(r.URL.Query().Get(KeyParam))
}

// Challenge is the WWW-Authenticate value of a 401 answer: the key goes in
// the URL, so there is no scheme that Graph could answer.
func (s *Source) Challenge() string { return `Key realm="pushproxy", param="` + KeyParam + `"` }

// Handshake answers Graph's endpoint validation, a POST with the query
// parameter validationToken, and passes every other request to next.
// The answer is 200 with Content-Type text/plain and the decoded token as
// the body, as Graph requires (within 10 seconds). The token is echoed as
// is, never escaped, but only when it is at most MaxValidationToken bytes
// of printable UTF-8 (letters, digits, punctuation, symbols and spaces);
// anything else is answered 400, and a wrong key 401.
func (s *Source) Handshake(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if !q.Has(ValidationParam) {
			next.ServeHTTP(w, r)
			return
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 64<<10))
		if !s.Authenticate(r) {
			s.metrics.validations.WithLabelValues("unauthorized").Inc()
			w.Header().Set("WWW-Authenticate", s.Challenge())
			httpjson.WriteError(w, &httpjson.Error{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "missing or wrong credentials"})
			return
		}
		token := q.Get(ValidationParam)
		if reason := checkValidationToken(token); reason != "" {
			s.metrics.validations.WithLabelValues("invalid").Inc()
			httpjson.WriteError(w, &httpjson.Error{Status: http.StatusBadRequest, Code: sources.CodeMalformed, Field: ValidationParam, Message: reason})
			return
		}
		s.metrics.validations.WithLabelValues("ok").Inc()
		s.cfg.Log.Info().Msg("answered a Graph endpoint validation")
		writeValidationToken(w, token)
	})
}

// writeValidationToken answers a validation request: 200, text/plain,
// the token as the body. The token must have passed
// checkValidationToken.
func writeValidationToken(w http.ResponseWriter, token string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, token)
}

// checkValidationToken says what is wrong with a token, or "".
func checkValidationToken(token string) string {
	switch {
	case token == "":
		return "validationToken is empty"
	case len(token) > MaxValidationToken:
		return "validationToken is longer than the limit"
	case !utf8.ValidString(token):
		return "validationToken is not UTF-8"
	}
	for _, r := range token {
		if !unicode.IsPrint(r) {
			return "validationToken holds a character that is not printable"
		}
	}
	return ""
}

// Results of one notification, the label of pushproxy_graph_notifications_total.
const (
	resultAccepted        = "accepted"
	resultLifecycle       = "lifecycle"
	resultBadClientState  = "bad_client_state"
	resultBadSubscription = "bad_subscription_id"
	resultChangeType      = "unsupported_change_type"
	resultResource        = "unsupported_resource"
	resultUnknownUser     = "unknown_user"
)

// Parse reads a notification delivery for ingest: the change notifications
// whose clientState matches become events, lifecycle notifications go to
// Config.OnLifecycle. The answer is 401 when no notification's clientState
// matches, 400/413 for a body that is not a collection, and 503 when the
// user directory is unavailable.
func (s *Source) Parse(r *http.Request, body []byte) ([]sources.Item, error) {
	c, err := Decode(body, s.cfg.MaxNotifications)
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	var (
		items   []sources.Item
		matched int
	)
	for i := range c.Value {
		n := &c.Value[i]
		allowed, known := s.clientState(n.ClientState)
		if !known {
			s.drop(n, resultBadClientState, "")
			continue
		}
		matched++
		if n.LifecycleEvent != "" {
			s.lifecycle(ctx, n)
			continue
		}
		e, result, err := s.event(ctx, n)
		if err != nil {
			return nil, &httpjson.Error{Status: http.StatusServiceUnavailable, Code: "unavailable",
				Message: "the Graph user directory is unavailable (" + err.Error() + "); retry later"}
		}
		if result != resultAccepted {
			continue
		}
		if allowed != nil && !slices.Contains(allowed, e.Tenant) {
			// A clientState belongs to its tenants' subscriptions: a
			// notification for another tenant is a forgery or a
			// misconfiguration, and nothing of the request is stored.
			return nil, &httpjson.Error{Status: http.StatusForbidden, Code: "forbidden", Field: "clientState",
				Message: "a notification's clientState may not report for tenant " + e.Tenant + "; nothing was stored"}
		}
		s.metrics.notifications.WithLabelValues(resultAccepted).Inc()
		items = append(items, sources.Item{Event: e})
	}
	if matched == 0 && len(c.Value) > 0 {
		return nil, &httpjson.Error{Status: http.StatusUnauthorized, Code: "unauthorized", Field: "clientState",
			Message: "no notification carries a known clientState"}
	}
	return items, nil
}

// Respond answers 202 Accepted once the events are stored.
func (s *Source) Respond(w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusAccepted)
}

// clientState reports whether state is a known secret (comparing with
// every configured one in constant time, then asking Config.Verify) and
// the tenants it may report for (nil: any).
func (s *Source) clientState(state string) (tenants []string, known bool) {
	got := sha256.Sum256([]byte(state))
	found := -1
	for i := range s.states {
		if subtle.ConstantTimeCompare(got[:], s.states[i][:]) == 1 {
			found = i
		}
	}
	if found >= 0 {
		return s.tenants[found], true
	}
	if s.cfg.Verify != nil && state != "" {
		return s.cfg.Verify(state)
	}
	return nil, false
}

// splitClientState reads a configured clientState: "SECRET" reports for
// any tenant; "TENANT[|TENANT...]:SECRET" only for those tenants (domain
// names, so a secret that merely contains a colon stays whole).
func splitClientState(cs string) (tenants []string, secret string) {
	head, rest, ok := strings.Cut(cs, ":")
	if !ok || rest == "" {
		return nil, cs
	}
	for _, t := range strings.Split(head, "|") {
		t = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(t)), ".")
		if events.ValidateTenant(t) != nil {
			return nil, cs
		}
		tenants = append(tenants, t)
	}
	return tenants, rest
}

// event maps a change notification. It returns the result label; an error
// only when the directory could not answer.
func (s *Source) event(ctx context.Context, n *Notification) (events.Event, string, error) {
	if n.SubscriptionID == "" || len(n.SubscriptionID) > 128 || checkToken(n.SubscriptionID) != nil || !utf8.ValidString(n.SubscriptionID) {
		s.drop(n, resultBadSubscription, "")
		return events.Event{}, resultBadSubscription, nil
	}
	var kind events.Kind
	switch n.ChangeType {
	case ChangeCreated:
		kind = events.KindNew
	case ChangeUpdated:
		// A message update does not say what changed: it may be the read
		// flag or anything else. Without fetching the message the count
		// cannot be adjusted, so it is reported as a flag change, which
		// the reconciler checks for Graph (reconcile.DefaultOpaqueSources).
		kind = events.KindFlags
	case ChangeDeleted:
		kind = events.KindDeleted
	default:
		s.drop(n, resultChangeType, "")
		return events.Event{}, resultChangeType, nil
	}
	res, err := ParseResource(n.Resource)
	if err != nil && n.ResourceData != nil {
		res, err = ParseResource(n.ResourceData.ODataID)
	}
	if err != nil {
		s.drop(n, resultResource, err.Error())
		return events.Event{}, resultResource, nil
	}
	user, err := s.cfg.Users.LookupUser(ctx, n.TenantID, res.UserID)
	if errors.Is(err, ErrUnknownUser) {
		s.drop(n, resultUnknownUser, "")
		return events.Event{}, resultUnknownUser, nil
	}
	if err != nil {
		return events.Event{}, "", err
	}
	return events.Event{
		Version:  events.SchemaVersion,
		Tenant:   user.Tenant,
		User:     user.Address,
		Mailbox:  s.mailbox(res.Folder),
		Kind:     kind,
		ChangeID: changeID(n),
		Source:   events.SourceGraph,
	}, resultAccepted, nil
}

// mailbox names the folder of a resource: the well-known name "inbox" is
// events.Inbox, no folder is Config.DefaultMailbox, and any other folder
// keeps its Graph id or name.
func (s *Source) mailbox(folder string) string {
	switch {
	case folder == "":
		return s.cfg.DefaultMailbox
	case strings.EqualFold(folder, "inbox"):
		return events.Inbox
	}
	return folder
}

// changeID identifies a change notification:
// "graph:<subscriptionId>:<changeType>:<hash>", the hash (128 bits, hex)
// covering the resource and the message id and, for updates, the etag.
// Graph resends a notification it could not deliver unchanged, so a retry
// gives the same id; two updates of one message differ by their etag.
func changeID(n *Notification) string {
	h := sha256.New()
	h.Write([]byte(n.Resource))
	h.Write([]byte{0})
	if n.ResourceData != nil {
		h.Write([]byte(n.ResourceData.ID))
		if n.ChangeType == ChangeUpdated {
			h.Write([]byte{0})
			h.Write([]byte(n.ResourceData.ODataEtag))
		}
	}
	return "graph:" + n.SubscriptionID + ":" + n.ChangeType + ":" + hex.EncodeToString(h.Sum(nil)[:16])
}

func (s *Source) lifecycle(ctx context.Context, n *Notification) {
	s.metrics.notifications.WithLabelValues(resultLifecycle).Inc()
	s.metrics.lifecycle.WithLabelValues(lifecycleLabel(n.LifecycleEvent)).Inc()
	l := Lifecycle{Event: n.LifecycleEvent, SubscriptionID: n.SubscriptionID, TenantID: n.TenantID}
	if t, err := time.Parse(time.RFC3339Nano, n.SubscriptionExpirationDateTime); err == nil {
		l.Expires = t
	}
	level := zerolog.WarnLevel
	if n.LifecycleEvent == LifecycleReauthorizationRequired {
		level = zerolog.InfoLevel
	}
	msg := "Graph lifecycle notification"
	if n.LifecycleEvent == LifecycleMissed {
		msg = "Graph missed change notifications: unread counts of this subscription's users may be wrong until their next change"
	}
	s.cfg.Log.WithLevel(level).Str("event", sources.Clip(n.LifecycleEvent)).Str("subscription", sources.Clip(n.SubscriptionID)).
		Str("tenant_id", sources.Clip(n.TenantID)).Msg(msg)
	if s.cfg.OnLifecycle != nil {
		s.cfg.OnLifecycle(ctx, l)
	}
}

// drop counts and logs a notification that yields no event.
func (s *Source) drop(n *Notification, result, detail string) {
	s.metrics.notifications.WithLabelValues(result).Inc()
	// A wrong clientState may be a forgery or a rotated secret: worth a
	// warning. The other reasons are counted; per notification they would
	// flood the log of a busy tenant.
	ev := s.cfg.Log.Debug()
	if result == resultBadClientState {
		ev = s.cfg.Log.Warn()
	}
	ev = ev.Str("reason", result).Str("subscription", sources.Clip(n.SubscriptionID)).Str("tenant_id", sources.Clip(n.TenantID))
	if detail != "" {
		ev = ev.Str("detail", detail)
	}
	ev.Msg("dropped a Graph notification")
}

// lifecycleLabel keeps the label values to the known events.
func lifecycleLabel(e string) string {
	switch e {
	case LifecycleReauthorizationRequired, LifecycleSubscriptionRemoved, LifecycleMissed:
		return e
	}
	return "other"
}
