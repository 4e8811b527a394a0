package subscriptions

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/httpjson"
)

// Route patterns of the subscribe API, for http.ServeMux.
const (
	PatternSubscribe   = "POST /v1/subscriptions"
	PatternUnsubscribe = "DELETE /v1/subscriptions"
	PatternList        = "GET /v1/subscriptions"
)

// MaxBodySize bounds a request body of the subscribe API.
const MaxBodySize = 64 << 10

// Error codes of the API's JSON errors (httpjson.Error.Code).
const (
	CodeMalformed        = "malformed"
	CodeTooLarge         = "too_large"
	CodeUnsupportedMedia = "unsupported_media_type"
	CodeInvalid          = "invalid_subscription"
	CodeNotFound         = "not_found"
	CodeForbidden        = "forbidden"
	CodeTooMany          = "too_many_subscriptions"
	CodeUnavailable      = "unavailable"
)

// ListResponse is the answer of GET /v1/subscriptions.
type ListResponse struct {
	Subscriptions []Subscription `json:"subscriptions"`
}

// Routes returns the handlers of the subscribe API by pattern, for a server
// (ingest) to mount behind its authentication:
//
//	POST   /v1/subscriptions   subscribe or refresh: a Subscription as JSON;
//	                           201 when new, 200 when refreshed, with the
//	                           stored subscription and its expiry
//	DELETE /v1/subscriptions   unsubscribe: tenant, user, appId and deviceId
//	                           as JSON or as query parameters; 204, or 404
//	GET    /v1/subscriptions?tenant=&user=
//	                           a user's subscriptions: {"subscriptions":[...]}
//
// Errors are JSON (httpjson.Error): 400 malformed, 413 too large, 415 not
// JSON, 422 with the name of the invalid field, 503 when the store fails.
//
// o.Access decides what each request may reach (nil: everything); a
// request outside it gets 403 and nothing is stored or returned. A list
// answer shows each device token masked (MaskDevice) unless Access reveals
// them. o.Check, when set, vets a subscription before it is stored.
func Routes(store *Store, log zerolog.Logger, o APIOptions) map[string]http.Handler {
	h := &handlers{store: store, log: log, access: o.Access, check: o.Check}
	return map[string]http.Handler{
		PatternSubscribe:   http.HandlerFunc(h.subscribe),
		PatternUnsubscribe: http.HandlerFunc(h.unsubscribe),
		PatternList:        http.HandlerFunc(h.list),
	}
}

// Access decides what a request may do in the subscriptions API.
type Access interface {
	// Allow reports whether r may act on tenant's subscriptions: write
	// (subscribe, unsubscribe) or read (list).
	Allow(r *http.Request, write bool, tenant string) bool
	// Reveal reports whether r may see device tokens in clear, when it asks
	// with ?reveal=true.
	Reveal(r *http.Request) bool
}

// APIOptions are what a server adds to the API's own checks.
type APIOptions struct {
	// Access decides what a request may reach; nil allows everything.
	Access Access
	// Check vets a subscription before it is stored, beyond Validate (for
	// example that a Web Push endpoint can be reached); its error is
	// answered 422 and should be a *ValidationError naming the field.
	Check func(Subscription) error
}

// Handler returns a mux serving Routes alone.
func Handler(store *Store, log zerolog.Logger, o APIOptions) http.Handler {
	mux := http.NewServeMux()
	for pattern, h := range Routes(store, log, o) {
		mux.Handle(pattern, h)
	}
	return mux
}

type handlers struct {
	store  *Store
	log    zerolog.Logger
	access Access
	check  func(Subscription) error
}

// allowed answers 403 and reports false when the request may not act on
// tenant.
func (h *handlers) allowed(w http.ResponseWriter, r *http.Request, write bool, tenant string) bool {
	if h.access == nil || h.access.Allow(r, write, strings.TrimSuffix(strings.ToLower(strings.TrimSpace(tenant)), ".")) {
		return true
	}
	what := "read"
	if write {
		what = "change"
	}
	httpjson.WriteError(w, &httpjson.Error{Status: http.StatusForbidden, Code: CodeForbidden,
		Message: "these credentials may not " + what + " the subscriptions of tenant " + tenant})
	return false
}

func (h *handlers) subscribe(w http.ResponseWriter, r *http.Request) {
	var sub Subscription
	if !readJSON(w, r, &sub) {
		return
	}
	for field, set := range map[string]bool{"key": sub.Key != "", "expiresAt": !sub.ExpiresAt.IsZero()} {
		if set {
			httpjson.WriteError(w, &httpjson.Error{Status: http.StatusUnprocessableEntity, Code: CodeInvalid, Field: field,
				Message: "invalid subscription: " + field + ": set by the server, not by the client"})
			return
		}
	}
	if !h.allowed(w, r, true, sub.Tenant) {
		return
	}
	if h.check != nil {
		if err := h.check(sub); err != nil {
			h.fail(w, err)
			return
		}
	}
	stored, created, err := h.store.Put(r.Context(), sub)
	if err != nil {
		h.fail(w, err)
		return
	}
	h.log.Info().Str("tenant", stored.Tenant).Str("device", DeviceRef(stored.AppID, stored.DeviceID)).
		Str("platform", string(stored.Platform)).Bool("new", created).Msg("device subscribed")
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	httpjson.Write(w, status, stored)
}

// deviceRef identifies one subscription in a DELETE.
type deviceRef struct {
	Tenant   string `json:"tenant"`
	User     string `json:"user"`
	AppID    string `json:"appId"`
	DeviceID string `json:"deviceId"`
}

func (h *handlers) unsubscribe(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ref := deviceRef{Tenant: q.Get("tenant"), User: q.Get("user"), AppID: q.Get("appId"), DeviceID: q.Get("deviceId")}
	if r.ContentLength != 0 && r.Header.Get("Content-Type") != "" {
		if !readJSON(w, r, &ref) {
			return
		}
	}
	if !h.allowed(w, r, true, ref.Tenant) {
		return
	}
	err := h.store.Delete(r.Context(), ref.Tenant, ref.User, ref.AppID, ref.DeviceID)
	if err != nil {
		h.fail(w, err)
		return
	}
	h.log.Info().Str("tenant", strings.ToLower(ref.Tenant)).Str("device", DeviceRef(ref.AppID, ref.DeviceID)).Msg("device unsubscribed")
	w.WriteHeader(http.StatusNoContent)
}

func (h *handlers) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !h.allowed(w, r, false, q.Get("tenant")) {
		return
	}
	subs, err := h.store.List(r.Context(), q.Get("tenant"), q.Get("user"))
	if err != nil {
		h.fail(w, err)
		return
	}
	if subs == nil {
		subs = []Subscription{}
	}
	if q.Get("reveal") != "true" || (h.access != nil && !h.access.Reveal(r)) {
		for i := range subs {
			subs[i].DeviceID = MaskDevice(subs[i].DeviceID)
		}
	}
	httpjson.Write(w, http.StatusOK, ListResponse{Subscriptions: subs})
}

// fail answers err: 422 for an invalid field, 404 for an unknown
// subscription, 409 for a user with the most devices, 503 otherwise.
func (h *handlers) fail(w http.ResponseWriter, err error) {
	var sve *ValidationError
	var eve *events.ValidationError
	switch {
	case errors.As(err, &sve):
		httpjson.WriteError(w, &httpjson.Error{Status: http.StatusUnprocessableEntity, Code: CodeInvalid, Field: sve.Field, Message: sve.Error()})
	case errors.As(err, &eve):
		httpjson.WriteError(w, &httpjson.Error{Status: http.StatusUnprocessableEntity, Code: CodeInvalid, Field: eve.Field, Message: "invalid subscription: " + eve.Field + ": " + eve.Reason})
	case errors.Is(err, ErrTooMany):
		httpjson.WriteError(w, &httpjson.Error{Status: http.StatusConflict, Code: CodeTooMany, Message: err.Error()})
	case errors.Is(err, ErrNotFound):
		httpjson.WriteError(w, &httpjson.Error{Status: http.StatusNotFound, Code: CodeNotFound, Message: "no such subscription"})
	default:
		h.log.Warn().Err(err).Msg("subscription store failed")
		httpjson.WriteError(w, &httpjson.Error{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: "the subscription store is not available; retry later"})
	}
}

// readJSON decodes the JSON body of r into v, or answers the error and
// returns false.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		httpjson.WriteError(w, &httpjson.Error{Status: http.StatusUnsupportedMediaType, Code: CodeUnsupportedMedia, Message: "the body must be application/json"})
		return false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodySize))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			httpjson.WriteError(w, &httpjson.Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Message: "the body is larger than 64 KiB"})
			return false
		}
		httpjson.WriteError(w, &httpjson.Error{Status: http.StatusBadRequest, Code: CodeMalformed, Message: "reading the body: " + err.Error()})
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err = dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("more than one JSON value")
	}
	if err != nil {
		if field, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			field = strings.Trim(field, `"`)
			httpjson.WriteError(w, &httpjson.Error{Status: http.StatusUnprocessableEntity, Code: CodeInvalid, Field: field,
				Message: "invalid subscription: " + field + ": unknown field"})
			return false
		}
		var ve *ValidationError
		if errors.As(err, &ve) {
			httpjson.WriteError(w, &httpjson.Error{Status: http.StatusUnprocessableEntity, Code: CodeInvalid, Field: ve.Field, Message: ve.Error()})
			return false
		}
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			httpjson.WriteError(w, &httpjson.Error{Status: http.StatusUnprocessableEntity, Code: CodeInvalid, Field: typeErr.Field, Message: "invalid subscription: " + typeErr.Field + ": wrong type"})
			return false
		}
		httpjson.WriteError(w, &httpjson.Error{Status: http.StatusBadRequest, Code: CodeMalformed, Message: "the body is not valid JSON: " + err.Error()})
		return false
	}
	return true
}
