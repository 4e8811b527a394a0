package ingest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/idna"

	"github.com/pushproxy/pushproxy/internal/credentials"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/httpjson"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// Outcome is what became of one event of a request.
type Outcome struct {
	// Index is the event's position among the request's events (for the
	// Dovecot Lua source: among the events the transaction produced).
	Index int `json:"index"`
	// Outcome is stored, duplicate or rejected.
	Outcome string `json:"outcome"`
	// Seq is the stream sequence of a stored or duplicate event.
	Seq uint64 `json:"seq,omitempty"`
	// Field and Reason say why an event was rejected.
	Field  string `json:"field,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Result is the answer to a request whose events are all in the stream.
type Result struct {
	Stored     int       `json:"stored"`
	Duplicates int       `json:"duplicates"`
	Events     []Outcome `json:"events"`
}

// Rejection is the 422 answer: the error and each rejected event. Nothing
// of the request was published.
type Rejection struct {
	Error  *httpjson.Error `json:"error"`
	Events []Outcome       `json:"events,omitempty"`
}

// serveSource runs one request of src through parse, validation and
// publishing, and answers.
func (s *Server) serveSource(src *Source, w http.ResponseWriter, r *http.Request) {
	body, rerr := ReadBody(r)
	if rerr != nil {
		Reject(w, rerr)
		return
	}
	items, err := src.Parse(r, body)
	if err != nil {
		Reject(w, requestError(err))
		return
	}
	evs, bad := s.prepare(src.Name, items)
	if len(bad) > 0 {
		rejectEvents(w, &httpjson.Error{
			Status:  http.StatusUnprocessableEntity,
			Code:    CodeInvalid,
			Field:   bad[0].Field,
			Message: fmt.Sprintf("%d of %d events are invalid; nothing was stored", len(bad), len(items)),
		}, bad)
		return
	}
	if msg := outOfScope(r, evs); msg != "" {
		Forbidden(w, msg)
		return
	}
	res, err := s.publish(r.Context(), src, evs)
	if err != nil {
		s.metrics.events.WithLabelValues(string(src.Name), OutcomeFailed).Add(float64(len(evs)))
		if errors.Is(err, ErrUnavailable) {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(s.cfg.RetryAfter.Seconds()))))
			Reject(w, &httpjson.Error{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: "the events were not stored (" + err.Error() + "); retry later"})
			return
		}
		Reject(w, &httpjson.Error{Status: http.StatusInternalServerError, Code: CodeInternal, Message: err.Error()})
		return
	}
	if src.Respond != nil {
		src.Respond(w, r, res)
		return
	}
	writeResult(w, res)
}

// outOfScope says which event the request's credentials may not post, or
// "" when they may post every one: then, and only then, anything is
// stored.
func outOfScope(r *http.Request, evs []events.Event) string {
	scope, ok := credentials.FromContext(r.Context())
	if !ok {
		return ""
	}
	for i := range evs {
		if !scope.Allows(credentials.RoleEvents, evs[i].Tenant) {
			return fmt.Sprintf("credential %s may not post events of tenant %s (event %d); nothing was stored", scope.ID, evs[i].Tenant, i)
		}
	}
	return ""
}

// writeResult answers 200 with res as httpjson.Write writes it,
// without reflection for the usual result of stored and duplicate events.
func writeResult(w http.ResponseWriter, res *Result) {
	if res.Events == nil {
		httpjson.Write(w, http.StatusOK, res)
		return
	}
	b := make([]byte, 0, 48+len(res.Events)*48)
	b = append(b, `{"stored":`...)
	b = strconv.AppendInt(b, int64(res.Stored), 10)
	b = append(b, `,"duplicates":`...)
	b = strconv.AppendInt(b, int64(res.Duplicates), 10)
	b = append(b, `,"events":[`...)
	for i, o := range res.Events {
		if o.Field != "" || o.Reason != "" || (o.Outcome != OutcomeStored && o.Outcome != OutcomeDuplicate) {
			httpjson.Write(w, http.StatusOK, res)
			return
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"index":`...)
		b = strconv.AppendInt(b, int64(o.Index), 10)
		b = append(b, `,"outcome":"`...)
		b = append(b, o.Outcome...)
		b = append(b, '"')
		if o.Seq != 0 {
			b = append(b, `,"seq":`...)
			b = strconv.AppendUint(b, o.Seq, 10)
		}
		b = append(b, '}')
	}
	b = append(b, "]}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// Publish completes, validates and stores events that a source produced
// by itself rather than in a request (the IMAP watcher), with the checks,
// deduplication and metrics of a request's events. An invalid event fails
// the call and nothing is stored; an error matching ErrUnavailable means
// JetStream did not store them and the caller retries.
func (s *Server) Publish(ctx context.Context, source events.Source, evs []events.Event) error {
	items := make([]sources.Item, len(evs))
	for i := range evs {
		items[i].Event = evs[i]
	}
	good, bad := s.prepare(source, items)
	if len(bad) > 0 {
		return fmt.Errorf("%d of %d %s events are invalid, the first: %s: %s", len(bad), len(evs), source, bad[0].Field, bad[0].Reason)
	}
	src := &Source{Name: source, Timeout: s.cfg.PublishTimeout}
	if _, err := s.publish(ctx, src, good); err != nil {
		s.metrics.events.WithLabelValues(string(source), OutcomeFailed).Add(float64(len(good)))
		return err
	}
	return nil
}

// publish stores evs and counts the outcomes.
func (s *Server) publish(ctx context.Context, src *Source, evs []events.Event) (*Result, error) {
	res := &Result{Events: make([]Outcome, len(evs))}
	if len(evs) == 0 {
		return res, nil
	}
	ctx, cancel := context.WithTimeout(ctx, src.Timeout)
	defer cancel()
	start := time.Now()
	acks, err := s.pub.Publish(ctx, evs)
	if err != nil {
		return nil, err
	}
	s.metrics.publish.WithLabelValues(string(src.Name)).Observe(time.Since(start).Seconds())
	for i, a := range acks {
		o := Outcome{Index: i, Outcome: OutcomeStored, Seq: a.Seq}
		if a.Duplicate {
			o.Outcome = OutcomeDuplicate
			res.Duplicates++
		} else {
			res.Stored++
		}
		res.Events[i] = o
	}
	s.metrics.events.WithLabelValues(string(src.Name), OutcomeStored).Add(float64(res.Stored))
	s.metrics.events.WithLabelValues(string(src.Name), OutcomeDuplicate).Add(float64(res.Duplicates))
	s.metrics.tenants.stored(evs, acks)
	s.activity.stored(src.Name, evs, acks, s.now().UTC())
	return res, nil
}

// prepare completes and validates each parsed item. It returns the good
// events and an outcome per bad one.
func (s *Server) prepare(source events.Source, items []sources.Item) ([]events.Event, []Outcome) {
	c := completer{s: s, source: source, now: s.now().UTC()}
	evs := make([]events.Event, 0, len(items))
	var bad []Outcome
	for i := range items {
		e, err := items[i].Event, items[i].Err
		if err == nil {
			err = c.complete(&e)
		}
		if err != nil {
			bad = append(bad, rejected(i, err))
			continue
		}
		evs = append(evs, e)
	}
	if len(bad) > 0 {
		s.metrics.events.WithLabelValues(string(source), OutcomeRejected).Add(float64(len(bad)))
	}
	return evs, bad
}

// completer completes the events of one request. It remembers the last
// domain it looked up and the last tenant it validated, as a request's
// events are usually of one tenant.
type completer struct {
	s      *Server
	source events.Source
	now    time.Time
	valid  events.Validator
	domain string // the last domain tenantOf looked up
	tenant string // its tenant
}

// complete adds what ingest knows to a parsed event, normalises and
// validates it.
func (c *completer) complete(e *events.Event) error {
	e.Source = c.source
	if e.Tenant == "" {
		e.Tenant = c.tenantOf(e.User)
		if e.Tenant == "" {
			return sources.Invalid("tenant", "required: the user address has no domain and this server has no default tenant")
		}
	}
	if e.OccurredAt.IsZero() {
		e.OccurredAt = c.now
	}
	e.ReceivedAt = c.now
	e.Normalize()
	return c.valid.Validate(e)
}

// tenantOf is the tenant of a user when the source names none: the
// domain of the address, or the default tenant.
func (c *completer) tenantOf(user string) string {
	at := strings.LastIndexByte(user, '@')
	if c.s.cfg.ForceDefaultTenant || at < 0 || at == len(user)-1 {
		return c.s.set.defaultTenant
	}
	domain := strings.TrimSpace(user[at+1:])
	if domain != c.domain || c.domain == "" {
		c.domain, c.tenant = domain, tenantOfDomain(domain)
	}
	return c.tenant
}

// tenantOfDomain is the ASCII form of a user's domain, or the domain when
// it has none.
func tenantOfDomain(domain string) string {
	if ascii, err := idna.Lookup.ToASCII(domain); err == nil {
		return ascii
	}
	return domain
}

// requestError turns a parser's request-level error into an answer.
func requestError(err error) *httpjson.Error {
	var se *httpjson.Error
	if errors.As(err, &se) {
		return se
	}
	var ve *events.ValidationError
	if errors.As(err, &ve) {
		return &httpjson.Error{Status: http.StatusUnprocessableEntity, Code: CodeInvalid, Field: ve.Field, Message: ve.Error()}
	}
	return sources.Malformed("%v", err)
}

func rejected(i int, err error) Outcome {
	o := Outcome{Index: i, Outcome: OutcomeRejected, Reason: err.Error()}
	var ve *events.ValidationError
	if errors.As(err, &ve) {
		o.Field, o.Reason = ve.Field, ve.Reason
	}
	return o
}
