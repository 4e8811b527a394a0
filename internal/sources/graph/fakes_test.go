package graph

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/pushproxy/pushproxy/internal/tokens"
)

const clientID = "2f6c1e4a-9b7d-4c3e-8a1f-5d6e7f8a9b0c"

// fakeEntra is an Entra token endpoint for one tenant and app: it checks
// the client assertion (signature by cert, x5t, aud, iss, sub, jti and
// lifetime) and answers with tokens token-1, token-2, ...
type fakeEntra struct {
	cert *tokens.Certificate
	srv  *httptest.Server

	mu     sync.Mutex
	issued []string
}

func newFakeEntra(t *testing.T, cert *tokens.Certificate) *fakeEntra {
	e := &fakeEntra{cert: cert}
	e.srv = httptest.NewServer(http.HandlerFunc(e.serve))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *fakeEntra) endpoint() string { return e.srv.URL + "/" + tenantID + "/oauth2/v2.0/token" }

func (e *fakeEntra) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if err := e.check(r); err != nil {
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": "invalid_client", "error_description": "AADSTS700027: " + err.Error()})
		return
	}
	e.mu.Lock()
	token := fmt.Sprintf("token-%d", len(e.issued)+1)
	e.issued = append(e.issued, token)
	e.mu.Unlock()
	_ = json.NewEncoder(w).Encode(map[string]any{"token_type": "Bearer", "expires_in": 3599, "access_token": token})
}

func (e *fakeEntra) check(r *http.Request) error {
	if r.Method != http.MethodPost || r.URL.Path != "/"+tenantID+"/oauth2/v2.0/token" || r.ParseForm() != nil {
		return fmt.Errorf("%s %s", r.Method, r.URL)
	}
	f := r.PostForm
	if f.Get("grant_type") != "client_credentials" || f.Get("client_id") != clientID || f.Get("scope") != tokens.GraphScope ||
		f.Get("client_assertion_type") != tokens.ClientAssertionType {
		return fmt.Errorf("form %v", f)
	}
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(f.Get("client_assertion"), claims, func(tok *jwt.Token) (any, error) {
		if tok.Header["x5t"] != e.cert.X5T() {
			return nil, fmt.Errorf("x5t %v", tok.Header["x5t"])
		}
		return &e.cert.Key.PublicKey, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithAudience(e.endpoint()), jwt.WithIssuer(clientID), jwt.WithSubject(clientID),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	if err != nil {
		return err
	}
	nbf, _ := claims.GetNotBefore()
	exp, _ := claims.GetExpirationTime()
	if jti, _ := claims["jti"].(string); jti == "" || nbf == nil || exp.Sub(nbf.Time) > 10*time.Minute {
		return fmt.Errorf("claims %v", claims)
	}
	return nil
}

// valid reports whether Entra issued token.
func (e *fakeEntra) valid(token string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Contains(e.issued, token)
}

// staticTokens is a TokenSource with one token.
type staticTokens string

func (s staticTokens) Token(context.Context) (string, error) { return string(s), nil }

// fakeGraph answers $batch requests for mail folders like Graph: per
// user, a count, a 404, a 403, or 429s before the count.
type fakeGraph struct {
	t   *testing.T
	srv *httptest.Server

	mu sync.Mutex
	// valid checks the bearer token.
	valid func(token string) bool
	// unread is the inbox count per user id; users not in it are 404.
	unread map[string]int
	// forbidden users are answered 403.
	forbidden map[string]bool
	// throttle is how many more 429s a user's request gets.
	throttle map[string]int
	// whole are the statuses (429, 503, 401, 500) of the next whole
	// requests, in order.
	whole []int
	// retryAfter is the Retry-After of throttling answers ("" for none).
	retryAfter string
	// batches are the user ids of each batch received.
	batches [][]string
	// folderURL matches the URL of a request for a mail folder's count.
	folderURL *regexp.Regexp
}

func newFakeGraph(t *testing.T) *fakeGraph {
	g := &fakeGraph{t: t, valid: func(tok string) bool { return tok == "static-token" },
		unread: map[string]int{}, forbidden: map[string]bool{}, throttle: map[string]int{}, retryAfter: "1",
		folderURL: regexp.MustCompile(`^/users/([^/?]+)/mailFolders/([a-z]+)\?\$select=unreadItemCount$`)}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeGraph) apiURL() string { return g.srv.URL + "/v1.0" }

func (g *fakeGraph) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	writeError := func(status int, code, msg string) {
		if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
			if g.retryAfter != "" {
				w.Header().Set("Retry-After", g.retryAfter)
			}
		}
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	}
	if r.Method != http.MethodPost || r.URL.Path != "/v1.0/$batch" || r.Header.Get("Content-Type") != "application/json" {
		writeError(http.StatusBadRequest, "BadRequest", r.Method+" "+r.URL.Path)
		return
	}
	var batch BatchRequest
	if err := json.NewDecoder(r.Body).Decode(&batch); err != nil || len(batch.Requests) == 0 || len(batch.Requests) > MaxBatchRequests {
		writeError(http.StatusBadRequest, "BadRequest", "Invalid batch payload.")
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if token, ok := bearer(r); !ok || !g.valid(token) {
		writeError(http.StatusUnauthorized, "InvalidAuthenticationToken", "Access token validation failure.")
		return
	}
	if len(g.whole) > 0 {
		status := g.whole[0]
		g.whole = g.whole[1:]
		g.batches = append(g.batches, nil)
		writeError(status, http.StatusText(status), "whole request")
		return
	}
	var users []string
	resp := BatchResponse{}
	for _, req := range batch.Requests {
		m := g.folderURL.FindStringSubmatch(req.URL)
		if req.Method != http.MethodGet || m == nil {
			g.t.Errorf("batch request %+v", req)
			continue
		}
		user := m[1]
		users = append(users, user)
		item := BatchItem{ID: req.ID, Headers: map[string]string{"Content-Type": "application/json"}}
		errorBody := func(code, msg string) json.RawMessage {
			b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": msg}})
			return b
		}
		count, known := g.unread[user]
		switch {
		case g.throttle[user] > 0:
			g.throttle[user]--
			item.Status, item.Body = http.StatusTooManyRequests, errorBody("ApplicationThrottled", "Application is over its MailboxConcurrency limit.")
			if g.retryAfter != "" {
				item.Headers["Retry-After"] = g.retryAfter
			}
		case g.forbidden[user]:
			item.Status, item.Body = http.StatusForbidden, errorBody("ErrorAccessDenied", "Access is denied. Check credentials and try again.")
		case !known:
			item.Status, item.Body = http.StatusNotFound, errorBody("MailboxNotEnabledForRESTAPI", "The mailbox is either inactive, soft-deleted, or is hosted on-premise.")
		default:
			item.Status = http.StatusOK
			item.Body, _ = json.Marshal(map[string]any{"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('" + user + "')/mailFolders(unreadItemCount)/$entity",
				"id": "AAMkAGI2TG93AAA=", "unreadItemCount": count})
		}
		// Graph answers in any order: the fake answers backwards.
		resp.Responses = append([]BatchItem{item}, resp.Responses...)
	}
	g.batches = append(g.batches, users)
	_ = json.NewEncoder(w).Encode(resp)
}

// received returns the user ids of each batch received so far (nil for
// a batch answered as a whole).
func (g *fakeGraph) received() [][]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.batches)
}

func bearer(r *http.Request) (string, bool) {
	const prefix = "Bearer "
	h := r.Header.Get("Authorization")
	if len(h) <= len(prefix) || h[:len(prefix)] != prefix {
		return "", false
	}
	return h[len(prefix):], true
}

// sleeps records the waits of a counter instead of waiting.
type sleeps struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (s *sleeps) Sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waits = append(s.waits, d)
	return ctx.Err()
}

func (s *sleeps) recorded() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.waits)
}
