package graph

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/sources/manage/managetest"
)

// fakeSub is a subscription of fakeSubscriptions.
type fakeSub struct {
	req     subscriptionRequest
	expires time.Time
}

// fakeSubscriptions is Graph's subscription API as documented: POST
// /subscriptions validates the notificationUrl and the
// lifecycleNotificationUrl (a POST with ?validationToken= that must be
// answered 200 text/plain with the token, within 10 seconds) before
// answering 201; PATCH renews (404 for an unknown id); DELETE deletes
// (404 for an unknown id). The expiration must be in the future and at
// most MaxMailSubscriptionLifetime away, on the test's clock.
type fakeSubscriptions struct {
	t     *testing.T
	srv   *httptest.Server
	clock *managetest.Clock

	mu   sync.Mutex
	subs map[string]*fakeSub
	// owners are the user ids of every subscription ever created, by id.
	owners map[string]string
	next   int
	// ops are the requests received: "POST <user id>", "PATCH <user
	// id>", "DELETE <user id>" (the id itself for an unknown
	// subscription), with " 429" and such for answers other than 2xx.
	ops []string
	// validated are the URLs validated, in order.
	validated []string
	// throttle is how many more creates are answered 429 with
	// retryAfter; fail how many more are answered 500.
	throttle   int
	retryAfter string
	fail       int
	// pageSize is how many subscriptions a GET /subscriptions page has.
	pageSize int
}

var resourcePattern = regexp.MustCompile(`^users/[^/]+/mailFolders\('inbox'\)/messages$`)

func newFakeSubscriptions(t *testing.T, clock *managetest.Clock) *fakeSubscriptions {
	g := &fakeSubscriptions{t: t, clock: clock, subs: map[string]*fakeSub{}, owners: map[string]string{}, retryAfter: "7", pageSize: 2}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeSubscriptions) apiURL() string { return g.srv.URL + "/v1.0" }

func writeGraphError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// record notes a request about subscription id or resource.
func (g *fakeSubscriptions) record(method, idOrResource, status string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.recordLocked(method, idOrResource, status)
}

func (g *fakeSubscriptions) recordLocked(method, idOrResource, status string) {
	who := idOrResource
	if owner, ok := g.owners[idOrResource]; ok {
		who = owner
	} else if parts := strings.Split(idOrResource, "/"); len(parts) > 1 {
		who = parts[1]
	}
	op := method + " " + who
	if status != "" {
		op += " " + status
	}
	g.ops = append(g.ops, op)
}

func (g *fakeSubscriptions) serve(w http.ResponseWriter, r *http.Request) {
	if token, ok := bearer(r); !ok || token != "static-token" {
		writeGraphError(w, http.StatusUnauthorized, "InvalidAuthenticationToken", "Access token validation failure.")
		return
	}
	switch id, hasID := strings.CutPrefix(r.URL.Path, "/v1.0/subscriptions/"); {
	case r.Method == http.MethodPost && r.URL.Path == "/v1.0/subscriptions":
		g.create(w, r)
	case r.Method == http.MethodGet && r.URL.Path == "/v1.0/subscriptions":
		g.list(w, r)
	case r.Method == http.MethodPatch && hasID:
		g.renew(w, r, id)
	case r.Method == http.MethodDelete && hasID:
		g.delete(w, id)
	default:
		writeGraphError(w, http.StatusBadRequest, "BadRequest", r.Method+" "+r.URL.Path)
	}
}

// checkExpiry says what is wrong with an expirationDateTime, or "".
func (g *fakeSubscriptions) checkExpiry(value string) (time.Time, string) {
	exp, err := time.Parse(time.RFC3339Nano, value)
	now := g.clock.Now()
	switch {
	case err != nil:
		return time.Time{}, "expirationDateTime is not a date"
	case !exp.After(now):
		return time.Time{}, "Subscription expiration must be in the future"
	case exp.Sub(now) > MaxMailSubscriptionLifetime:
		return time.Time{}, "Subscription expiration can only be 10070 minutes in the future."
	}
	return exp, ""
}

func (g *fakeSubscriptions) create(w http.ResponseWriter, r *http.Request) {
	var req subscriptionRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || r.Header.Get("Content-Type") != "application/json" {
		writeGraphError(w, http.StatusBadRequest, "BadRequest", fmt.Sprintf("Invalid request: %v", err))
		return
	}
	g.mu.Lock()
	throttled, failed := g.throttle > 0, g.throttle == 0 && g.fail > 0
	if throttled {
		g.throttle--
	} else if failed {
		g.fail--
	}
	g.mu.Unlock()
	switch {
	case throttled:
		g.record("POST", req.Resource, "429")
		w.Header().Set("Retry-After", g.retryAfter)
		writeGraphError(w, http.StatusTooManyRequests, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.")
		return
	case failed:
		g.record("POST", req.Resource, "500")
		writeGraphError(w, http.StatusInternalServerError, "InternalServerError", "Something went wrong.")
		return
	}
	exp, problem := g.checkExpiry(req.ExpirationDateTime)
	switch {
	case problem != "":
	case req.ChangeType != "created,updated,deleted":
		problem = "changeType " + req.ChangeType
	case !resourcePattern.MatchString(req.Resource):
		problem = "resource " + req.Resource
	case req.ClientState == "" || len(req.ClientState) > MaxClientState:
		problem = "clientState"
	case req.NotificationURL == "" || req.LifecycleNotificationURL == "":
		problem = "notificationUrl and lifecycleNotificationUrl are required"
	}
	if problem == "" {
		for _, u := range []string{req.NotificationURL, req.LifecycleNotificationURL} {
			if err := g.validate(r.Context(), u); err != nil {
				problem = "Subscription validation request failed. " + err.Error()
				break
			}
		}
	}
	if problem != "" {
		g.record("POST", req.Resource, "400")
		writeGraphError(w, http.StatusBadRequest, "ValidationError", problem)
		return
	}
	g.mu.Lock()
	g.next++
	id := fmt.Sprintf("7f105c7d-2dc5-4530-97cd-%012d", g.next)
	g.subs[id] = &fakeSub{req: req, expires: exp}
	g.owners[id] = strings.Split(req.Resource, "/")[1]
	g.recordLocked("POST", id, "")
	g.mu.Unlock()
	g.answer(w, http.StatusCreated, id, req, exp)
}

// validate makes Graph's validation request to u.
func (g *fakeSubscriptions) validate(ctx context.Context, u string) error {
	buf := make([]byte, 12)
	_, _ = rand.Read(buf)
	token := "Validation: Testing client application reachability for subscription Request-Id: " + hex.EncodeToString(buf)
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u+sep+ValidationParam+"="+url.QueryEscape(token), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") || string(body) != token {
		return fmt.Errorf("%s answered %d %q: %q", u, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	g.mu.Lock()
	g.validated = append(g.validated, u)
	g.mu.Unlock()
	return nil
}

func (g *fakeSubscriptions) renew(w http.ResponseWriter, r *http.Request, id string) {
	var req subscriptionRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Resource != "" || req.ClientState != "" {
		writeGraphError(w, http.StatusBadRequest, "BadRequest", "only expirationDateTime may change")
		return
	}
	g.mu.Lock()
	sub, ok := g.live(id)
	g.mu.Unlock()
	if !ok {
		g.record("PATCH", id, "404")
		writeGraphError(w, http.StatusNotFound, "ResourceNotFound", "The object was not found.")
		return
	}
	exp, problem := g.checkExpiry(req.ExpirationDateTime)
	if problem != "" {
		g.record("PATCH", id, "400")
		writeGraphError(w, http.StatusBadRequest, "InvalidRequest", problem)
		return
	}
	g.mu.Lock()
	sub.expires = exp
	g.recordLocked("PATCH", id, "")
	full := sub.req
	g.mu.Unlock()
	g.answer(w, http.StatusOK, id, full, exp)
}

func (g *fakeSubscriptions) delete(w http.ResponseWriter, id string) {
	g.mu.Lock()
	_, ok := g.live(id)
	delete(g.subs, id)
	g.mu.Unlock()
	if !ok {
		g.record("DELETE", id, "404")
		writeGraphError(w, http.StatusNotFound, "ResourceNotFound", "The object was not found.")
		return
	}
	g.record("DELETE", id, "")
	w.WriteHeader(http.StatusNoContent)
}

func (g *fakeSubscriptions) answer(w http.ResponseWriter, status int, id string, req subscriptionRequest, exp time.Time) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"@odata.context":            "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
		"id":                        id,
		"resource":                  req.Resource,
		"applicationId":             clientID,
		"changeType":                req.ChangeType,
		"clientState":               req.ClientState,
		"notificationUrl":           req.NotificationURL,
		"lifecycleNotificationUrl":  req.LifecycleNotificationURL,
		"expirationDateTime":        exp.UTC().Format(graphTime),
		"creatorId":                 clientID,
		"latestSupportedTlsVersion": "v1_2",
	})
}

// list answers a page of GET /subscriptions: pageSize subscriptions in
// id order from $skiptoken, with the next page's link.
func (g *fakeSubscriptions) list(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	ids := make([]string, 0, len(g.subs))
	for id := range g.subs {
		if _, ok := g.live(id); ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	from := 0
	if skip := r.URL.Query().Get("$skiptoken"); skip != "" {
		from, _ = slices.BinarySearch(ids, skip)
	}
	to := min(from+g.pageSize, len(ids))
	page := map[string]any{"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions"}
	value := []map[string]any{}
	for _, id := range ids[from:to] {
		s := g.subs[id]
		value = append(value, map[string]any{"id": id, "resource": s.req.Resource, "notificationUrl": s.req.NotificationURL,
			"expirationDateTime": s.expires.UTC().Format(graphTime), "applicationId": clientID})
	}
	page["value"] = value
	if to < len(ids) {
		page["@odata.nextLink"] = g.apiURL() + "/subscriptions?$skiptoken=" + url.QueryEscape(ids[to])
	}
	g.ops = append(g.ops, "GET subscriptions")
	g.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(page)
}

// plant adds a subscription the manager did not create, as another
// process or a crash left it.
func (g *fakeSubscriptions) plant(id, owner, notificationURL string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.subs[id] = &fakeSub{req: subscriptionRequest{Resource: InboxResource(owner), NotificationURL: notificationURL}, expires: g.clock.Now().Add(time.Hour)}
	g.owners[id] = owner
}

// live returns subscription id unless it expired: Graph deletes expired
// subscriptions. Called with mu held.
func (g *fakeSubscriptions) live(id string) (*fakeSub, bool) {
	s, ok := g.subs[id]
	if ok && !s.expires.After(g.clock.Now()) {
		delete(g.subs, id)
		return nil, false
	}
	return s, ok
}

// remove drops a subscription as Graph does when it removes one.
func (g *fakeSubscriptions) remove(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.subs, id)
}

// received returns the requests so far, sorted, and forgets them.
func (g *fakeSubscriptions) received() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	ops := g.ops
	g.ops = nil
	slices.Sort(ops)
	return ops
}

// byResource returns the subscriptions by resource.
func (g *fakeSubscriptions) byResource() map[string]fakeSub {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]fakeSub{}
	for id := range g.subs {
		s, ok := g.live(id)
		if !ok {
			continue
		}
		if _, dup := out[s.req.Resource]; dup {
			g.t.Errorf("two subscriptions on %s", s.req.Resource)
		}
		out[s.req.Resource] = *s
	}
	return out
}

// idOf returns the id of the subscription on resource.
func (g *fakeSubscriptions) idOf(resource string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	for id := range g.subs {
		if s, ok := g.live(id); ok && s.req.Resource == resource {
			return id
		}
	}
	g.t.Fatalf("no subscription on %s", resource)
	return ""
}
