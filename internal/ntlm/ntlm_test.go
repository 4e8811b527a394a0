package ntlm_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/ntlm"
	"github.com/pushproxy/pushproxy/internal/ntlm/ntlmtest"
)

// echo answers with the authenticated user and the request's body.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	fmt.Fprintf(w, "%s:%s", r.Header.Get("X-Authenticated-User"), body)
})

var accounts = map[string]string{`FABRIKAM\svc-push`: "pa55word", "svc-upn@fabrikam.com": "s3cret"}

// post sends body as user and returns the status and the answer.
func post(ctx context.Context, t *testing.T, c *http.Client, url, user, password, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, password)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("posting: %v", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(data)
}

func TestTransportAuthenticates(t *testing.T) {
	tests := []struct {
		name, user, password string
		status               int
		answer               string // with 200
		handshakes, refused  int
	}{
		{"domain user", `FABRIKAM\svc-push`, "pa55word", 200, `FABRIKAM\svc-push:hello`, 1, 0},
		{"domain in another case", `fabrikam\SVC-PUSH`, "pa55word", 200, `fabrikam\SVC-PUSH:hello`, 1, 0},
		{"principal name", "svc-upn@fabrikam.com", "s3cret", 200, "svc-upn@fabrikam.com:hello", 1, 0},
		{"wrong password", `FABRIKAM\svc-push`, "guess", 401, "", 0, 3},
		{"unknown user", `FABRIKAM\nobody`, "pa55word", 401, "", 0, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := ntlmtest.NewServer(t, accounts, echo)
			c := &http.Client{Transport: ntlm.NewTransport(nil, 1)}
			// Three requests: the first shakes hands, the others use the
			// authenticated connection.
			for range 3 {
				status, answer := post(context.Background(), t, c, srv.URL, tt.user, tt.password, "hello")
				if status != tt.status || (status == 200 && answer != tt.answer) {
					t.Fatalf("answer %d %q, want %d %q", status, answer, tt.status, tt.answer)
				}
			}
			got := srv.Counts()
			if got.Handshakes != tt.handshakes || got.Refused != tt.refused || got.Basic != 0 || got.Unchallenged != 0 || got.NTLMv1 != 0 {
				t.Fatalf("server saw %+v", got)
			}
		})
	}
}

func TestTransportNeverSendsBasic(t *testing.T) {
	var sawCredentials bool
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			mu.Lock()
			sawCredentials = true
			mu.Unlock()
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="mail.fabrikam.com"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer srv.Close()
	c := &http.Client{Transport: ntlm.NewTransport(nil, 1)}
	if status, _ := post(context.Background(), t, c, srv.URL, `FABRIKAM\svc-push`, "pa55word", "hello"); status != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401", status)
	}
	mu.Lock()
	defer mu.Unlock()
	if sawCredentials {
		t.Fatal("the password went to a server asking for Basic")
	}
}

// TestTransportConcurrentHandshakes sends many requests at once over a
// few sessions: every handshake must keep to its connection, and every
// body must arrive whole although it is sent up to three times.
func TestTransportConcurrentHandshakes(t *testing.T) {
	const sessions, requests = 3, 60
	srv := ntlmtest.NewServer(t, accounts, echo)
	c := &http.Client{Transport: ntlm.NewTransport(srv.Client().Transport.(*http.Transport), sessions)}
	var wg sync.WaitGroup
	errs := make(chan error, requests)
	for i := range requests {
		wg.Go(func() {
			body := fmt.Sprintf("request %d %s", i, bytes.Repeat([]byte("x"), i*100))
			req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(body))
			req.SetBasicAuth(`FABRIKAM\svc-push`, "pa55word")
			resp, err := c.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			data, _ := io.ReadAll(resp.Body)
			if want := `FABRIKAM\svc-push:` + body; resp.StatusCode != 200 || string(data) != want {
				errs <- fmt.Errorf("request %d: %d %.60q", i, resp.StatusCode, data)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got := srv.Counts()
	if got.Unchallenged != 0 || got.Refused != 0 || got.Basic != 0 {
		t.Fatalf("server saw %+v", got)
	}
	// Each session authenticates a connection once and keeps it.
	if got.Handshakes > sessions {
		t.Fatalf("%d handshakes for %d sessions, want at most one each (%+v)", got.Handshakes, sessions, got)
	}
}

func TestTransportWaitsForASession(t *testing.T) {
	srv := ntlmtest.NewServer(t, accounts, echo)
	c := &http.Client{Transport: ntlm.NewTransport(nil, 1)}
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.SetBasicAuth(`FABRIKAM\svc-push`, "pa55word")
	held, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	// The only session is held until held's body is closed.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req2, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	if _, err := c.Do(req2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want the deadline", err)
	}
	held.Body.Close()
	if status, _ := post(context.Background(), t, c, srv.URL, `FABRIKAM\svc-push`, "pa55word", ""); status != 200 {
		t.Fatalf("status %d after the session was freed", status)
	}
}

func TestClient(t *testing.T) {
	if _, err := ntlm.Client(&http.Client{Transport: http.NewFileTransport(http.Dir("."))}, 1); err == nil {
		t.Fatal("a client with a foreign transport was accepted")
	}
	c, err := ntlm.Client(&http.Client{Timeout: time.Minute}, 2)
	if err != nil || c.Timeout != time.Minute {
		t.Fatalf("client %+v, %v", c, err)
	}
	if _, ok := c.Transport.(*ntlm.Transport); !ok {
		t.Fatalf("transport %T", c.Transport)
	}
}
