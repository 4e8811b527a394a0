package subscriptions

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/service"
)

// Route patterns of the subscribe API, for http.ServeMux.
const (
	PatternSubscribe   = "POST /v1/subscriptions"
	PatternUnsubscribe = "DELETE /v1/subscriptions"
	PatternList        = "GET /v1/subscriptions"
)

// MaxBodySize bounds a request body of the subscribe API.
const MaxBodySize = 64 << 10

// Error codes of the API's JSON errors (service.Error.Code).
const (
	CodeMalformed        = "malformed"
	CodeTooLarge         = "too_large"
	CodeUnsupportedMedia = "unsupported_media_type"
	CodeInvalid          = "invalid_subscription"
	CodeNotFound         = "not_found"
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
// Errors are JSON (service.Error): 400 malformed, 413 too large, 415 not
// JSON, 422 with the name of the invalid field, 503 when the store fails.
func Routes(store *Store, log zerolog.Logger) map[string]http.Handler {
	h := &handlers{store: store, log: log}
	return map[string]http.Handler{
		PatternSubscribe:   http.HandlerFunc(h.subscribe),
		PatternUnsubscribe: http.HandlerFunc(h.unsubscribe),
		PatternList:        http.HandlerFunc(h.list),
	}
}

// Handler returns a mux serving Routes alone.
func Handler(store *Store, log zerolog.Logger) http.Handler {
	mux := http.NewServeMux()
	for pattern, h := range Routes(store, log) {
		mux.Handle(pattern, h)
	}
	return mux
}

type handlers struct {
	store *Store
	log   zerolog.Logger
}

func (h *handlers) subscribe(w http.ResponseWriter, r *http.Request) {
	var sub Subscription
	if !readJSON(w, r, &sub) {
		return
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
	service.WriteJSON(w, status, stored)
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
	subs, err := h.store.List(r.Context(), q.Get("tenant"), q.Get("user"))
	if err != nil {
		h.fail(w, err)
		return
	}
	if subs == nil {
		subs = []Subscription{}
	}
	service.WriteJSON(w, http.StatusOK, ListResponse{Subscriptions: subs})
}

// fail answers err: 422 for an invalid field, 404 for an unknown
// subscription, 503 otherwise.
func (h *handlers) fail(w http.ResponseWriter, err error) {
	var sve *ValidationError
	var eve *events.ValidationError
	switch {
	case errors.As(err, &sve):
		service.WriteError(w, &service.Error{Status: http.StatusUnprocessableEntity, Code: CodeInvalid, Field: sve.Field, Message: sve.Error()})
	case errors.As(err, &eve):
		service.WriteError(w, &service.Error{Status: http.StatusUnprocessableEntity, Code: CodeInvalid, Field: eve.Field, Message: "invalid subscription: " + eve.Field + ": " + eve.Reason})
	case errors.Is(err, ErrNotFound):
		service.WriteError(w, &service.Error{Status: http.StatusNotFound, Code: CodeNotFound, Message: "no such subscription"})
	default:
		h.log.Warn().Err(err).Msg("subscription store failed")
		service.WriteError(w, &service.Error{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: "the subscription store is not available; retry later"})
	}
}

// readJSON decodes the JSON body of r into v, or answers the error and
// returns false.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		service.WriteError(w, &service.Error{Status: http.StatusUnsupportedMediaType, Code: CodeUnsupportedMedia, Message: "the body must be application/json"})
		return false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodySize))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			service.WriteError(w, &service.Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Message: "the body is larger than 64 KiB"})
			return false
		}
		service.WriteError(w, &service.Error{Status: http.StatusBadRequest, Code: CodeMalformed, Message: "reading the body: " + err.Error()})
		return false
	}
	if err := json.Unmarshal(body, v); err != nil {
		var ve *ValidationError
		if errors.As(err, &ve) {
			service.WriteError(w, &service.Error{Status: http.StatusUnprocessableEntity, Code: CodeInvalid, Field: ve.Field, Message: ve.Error()})
			return false
		}
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			service.WriteError(w, &service.Error{Status: http.StatusUnprocessableEntity, Code: CodeInvalid, Field: typeErr.Field, Message: "invalid subscription: " + typeErr.Field + ": wrong type"})
			return false
		}
		service.WriteError(w, &service.Error{Status: http.StatusBadRequest, Code: CodeMalformed, Message: "the body is not valid JSON: " + err.Error()})
		return false
	}
	return true
}
