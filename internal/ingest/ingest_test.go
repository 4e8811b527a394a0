package ingest_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/ingest"
	"github.com/pushproxy/pushproxy/internal/testfs"
)

const (
	oxBody  = `{"user":"alice@example.com","event":"messageNew","folder":"INBOX","imap-uidvalidity":1795623633,"imap-uid":4,"from":"Bob <bob@example.org>","subject":"café \"quoted\"","snippet":"Hello body","unseen":2}`
	oneNew  = `{"user":"alice@fabrikam.com","kind":"new","change_id":"c1"}`
	jsonCT  = "application/json"
	ndjsonT = "application/x-ndjson"
)

func TestSameChangeTwiceIsStoredOnce(t *testing.T) {
	h := newHarness(t)
	for i, want := range []string{ingest.OutcomeStored, ingest.OutcomeDuplicate} {
		a := h.send(t, http.MethodPut, "/v1/dovecot/ox", "application/json; charset=utf-8", "dovecot", []byte(oxBody))
		if a.status != http.StatusOK {
			t.Fatalf("attempt %d: status %d: %s", i, a.status, a.raw)
		}
		if got := outcomes(a); got != want+"@1" {
			t.Fatalf("attempt %d: outcomes %s, want %s@1", i, got, want)
		}
	}
	if n := len(h.stored(t)); n != 1 {
		t.Fatalf("stream holds %d messages, want 1", n)
	}
	// The same change from another source is another message.
	a := h.send(t, http.MethodPost, "/v1/events", jsonCT, "native", []byte(`{"user":"alice@example.com","kind":"new","change_id":"ox:INBOX/1795623633/4"}`))
	if got := outcomes(a); got != "stored@2" {
		t.Fatalf("native outcome %s, want stored@2", got)
	}
}

// outcomes lists "outcome@seq" of each event of a 200 answer.
func outcomes(a *answer) string {
	list, _ := a.body["events"].([]any)
	var out []string
	for _, item := range list {
		o := item.(map[string]any)
		out = append(out, fmt.Sprintf("%v@%v", o["outcome"], o["seq"]))
	}
	return strings.Join(out, ",")
}

func TestBadInputs(t *testing.T) {
	big := `{"user":"alice@fabrikam.com","kind":"new","change_id":"` + strings.Repeat("x", 2000) + `"}`
	tests := []struct {
		name                    string
		method, path, ct, auth  string
		body                    string
		chunked                 bool
		status                  int
		code, field, bodyPhrase string
	}{
		{name: "malformed JSON", path: "/v1/events", ct: jsonCT, auth: "native", body: `{"user":`, status: 400, code: "malformed"},
		{name: "malformed NDJSON line", path: "/v1/events", ct: ndjsonT, auth: "native", body: oneNew + "\n{\n", status: 400, code: "malformed", bodyPhrase: "line 2"},
		{name: "wrong type", path: "/v1/events", ct: jsonCT, auth: "native", body: `{"user":"a@b.example","kind":"new","change_id":"c","unread":"3"}`, status: 422, code: "invalid_event", field: "unread", bodyPhrase: "must be an integer, got string"},
		{name: "unknown field", path: "/v1/events", ct: jsonCT, auth: "native", body: `{"user":"a@b.example","kind":"new","change_id":"c","subject":"hi"}`, status: 422, code: "invalid_event", field: "subject"},
		{name: "unknown kind", path: "/v1/events", ct: jsonCT, auth: "native", body: `{"user":"a@b.example","kind":"exploded","change_id":"c"}`, status: 422, code: "invalid_event", field: "kind"},
		{name: "missing change id", path: "/v1/events", ct: jsonCT, auth: "native", body: `{"user":"a@b.example","kind":"new"}`, status: 422, code: "invalid_event", field: "change_id"},
		{name: "bad tenant", path: "/v1/events", ct: jsonCT, auth: "native", body: `{"tenant":"not a domain","user":"a","kind":"new","change_id":"c"}`, status: 422, code: "invalid_event", field: "tenant"},
		{name: "no tenant at all", path: "/v1/events", ct: jsonCT, auth: "native", body: `{"user":"bob","kind":"new","change_id":"c"}`, status: 422, code: "invalid_event", field: "tenant", bodyPhrase: "no default tenant"},
		{name: "one bad event spoils the batch", path: "/v1/events", ct: jsonCT, auth: "native", body: "[" + oneNew + `,{"user":"a@b.example","kind":"nope","change_id":"c"}]`, status: 422, code: "invalid_event", field: "kind", bodyPhrase: `"index":1`},
		{name: "invalid UTF-8 user", path: "/v1/events", ct: jsonCT, auth: "native", body: "{\"user\":\"a\xff@b.example\",\"kind\":\"new\",\"change_id\":\"c\"}", status: 422, code: "invalid_event", field: "user", bodyPhrase: "UTF-8"},
		{name: "invalid UTF-8 tenant", path: "/v1/events", ct: jsonCT, auth: "native", body: "{\"tenant\":\"b\xfe.example\",\"user\":\"a@b.example\",\"kind\":\"new\",\"change_id\":\"c\"}", status: 422, code: "invalid_event", field: "tenant"},
		{name: "invalid UTF-8 change id", path: "/v1/events", ct: jsonCT, auth: "native", body: "{\"user\":\"a@b.example\",\"kind\":\"new\",\"change_id\":\"c\xc3\"}", status: 422, code: "invalid_event", field: "change_id"},
		{name: "invalid UTF-8 ox user", method: http.MethodPut, path: "/v1/dovecot/ox", ct: jsonCT, auth: "dovecot", body: "{\"user\":\"al\xffice@example.com\",\"event\":\"messageNew\",\"imap-uid\":4}", status: 422, code: "invalid_event", field: "user"},
		{name: "oversize body", path: "/v1/events", ct: jsonCT, auth: "native", body: big, status: 413, code: "too_large"},
		{name: "oversize chunked body", path: "/v1/events", ct: jsonCT, auth: "native", body: big, chunked: true, status: 413, code: "too_large"},
		{name: "too many events", path: "/v1/events", ct: ndjsonT, auth: "native", body: strings.Repeat(oneNew+"\n", 4), status: 413, code: "too_large"},
		{name: "missing token", path: "/v1/events", ct: jsonCT, body: oneNew, status: 401, code: "unauthorized"},
		{name: "Basic on native", path: "/v1/events", ct: jsonCT, auth: "dovecot", body: oneNew, status: 401, code: "unauthorized"},
		{name: "wrong content type", path: "/v1/events", ct: "text/plain", auth: "native", body: oneNew, status: 415, code: "unsupported_media_type"},
		{name: "form content type", path: "/v1/events", ct: "application/x-www-form-urlencoded", auth: "native", body: oneNew, status: 415, code: "unsupported_media_type"},
		{name: "no content type", path: "/v1/events", auth: "native", body: oneNew, status: 415, code: "unsupported_media_type"},
		{name: "ox missing credentials", method: http.MethodPut, path: "/v1/dovecot/ox", ct: jsonCT, body: oxBody, status: 401, code: "unauthorized"},
		{name: "ox bearer", method: http.MethodPut, path: "/v1/dovecot/ox", ct: jsonCT, auth: "native", body: oxBody, status: 401, code: "unauthorized"},
		{name: "ox malformed", method: http.MethodPut, path: "/v1/dovecot/ox", ct: jsonCT, auth: "dovecot", body: `{"user":"alice@example.com",`, status: 400, code: "malformed"},
		{name: "ox unknown event", method: http.MethodPut, path: "/v1/dovecot/ox", ct: jsonCT, auth: "dovecot", body: `{"user":"alice@example.com","event":"messageExploded","imap-uid":4}`, status: 422, code: "invalid_event", field: "event"},
		{name: "ox wrong type", method: http.MethodPut, path: "/v1/dovecot/ox", ct: jsonCT, auth: "dovecot", body: `{"user":"alice@example.com","event":"messageNew","imap-uid":4,"unseen":"2"}`, status: 422, code: "invalid_event", field: "unseen"},
		{name: "lua unknown event", path: "/v1/dovecot/lua", ct: jsonCT, auth: "dovecot", body: `{"user":"alice@example.com","txn":"t","events":[{"event":"MessageExploded"}]}`, status: 422, code: "invalid_event", field: "events[0].event"},
		{name: "lua no txn", path: "/v1/dovecot/lua", ct: jsonCT, auth: "dovecot", body: `{"user":"alice@example.com","events":[{"event":"MessageNew"}]}`, status: 422, code: "invalid_event", field: "txn"},
		{name: "lua negative unseen", path: "/v1/dovecot/lua", ct: jsonCT, auth: "dovecot", body: `{"user":"alice@example.com","txn":"t","unseen":{"INBOX":-1}}`, status: 422, code: "invalid_event", field: "unread"},
	}
	h := newHarness(t, func(c *ingest.Config) { c.MaxBodyBytes = 1024; c.MaxEvents = 3 })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			var body io.Reader = strings.NewReader(tt.body)
			if tt.chunked {
				body = io.MultiReader(body) // unknown length: sent chunked
			}
			req, err := http.NewRequest(method, h.url+tt.path, body)
			if err != nil {
				t.Fatal(err)
			}
			if tt.ct != "" {
				req.Header.Set("Content-Type", tt.ct)
			}
			switch tt.auth {
			case "native":
				req.Header.Set("Authorization", "Bearer "+nativeToken)
			case "dovecot":
				req.SetBasicAuth(dovecotUser, dovecotPassword)
			}
			a := h.do(t, req)
			if a.status != tt.status || a.errorCode() != tt.code || a.errorField() != tt.field {
				t.Fatalf("got %d code %q field %q, want %d %q %q: %s", a.status, a.errorCode(), a.errorField(), tt.status, tt.code, tt.field, a.raw)
			}
			if !bytes.Contains(a.raw, []byte(tt.bodyPhrase)) {
				t.Fatalf("answer lacks %q: %s", tt.bodyPhrase, a.raw)
			}
			if tt.status == 401 && a.header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
	if n := len(h.stored(t)); n != 0 {
		t.Fatalf("rejected requests stored %d messages", n)
	}
}

func TestChallenges(t *testing.T) {
	h := newHarness(t)
	for path, want := range map[string]string{
		"/v1/events":      `Bearer realm="pushproxy"`,
		"/v1/dovecot/ox":  `Basic realm="pushproxy", charset="UTF-8"`,
		"/v1/dovecot/lua": `Basic realm="pushproxy", charset="UTF-8"`,
	} {
		a := h.send(t, http.MethodPost, path, jsonCT, "", []byte(`{}`))
		if a.status != 401 || a.header.Get("WWW-Authenticate") != want {
			t.Errorf("%s: %d %q, want 401 %q", path, a.status, a.header.Get("WWW-Authenticate"), want)
		}
	}
}

func TestWrongPassword(t *testing.T) {
	h := newHarness(t)
	req, _ := http.NewRequest(http.MethodPut, h.url+"/v1/dovecot/ox", strings.NewReader(oxBody))
	req.Header.Set("Content-Type", jsonCT)
	req.SetBasicAuth(dovecotUser, dovecotPassword+"x")
	if a := h.do(t, req); a.status != 401 {
		t.Fatalf("wrong password: %d", a.status)
	}
	req, _ = http.NewRequest(http.MethodPost, h.url+"/v1/events", strings.NewReader(oneNew))
	req.Header.Set("Content-Type", jsonCT)
	req.Header.Set("Authorization", "Bearer old-token")
	if a := h.do(t, req); a.status != 200 {
		t.Fatalf("second configured token: %d %s", a.status, a.raw)
	}
}

func TestTenants(t *testing.T) {
	tests := []struct {
		name   string
		mod    func(*ingest.Config)
		user   string
		tenant string
	}{
		{"domain of the address", nil, "alice@Fabrikam.COM", "fabrikam.com"},
		{"international domain", nil, "alice@bücher.example", "xn--bcher-kva.example"},
		{"default tenant", func(c *ingest.Config) { c.DefaultTenant = "Contoso.com" }, "bob", "contoso.com"},
		{"forced default tenant", func(c *ingest.Config) { c.DefaultTenant = "contoso.com"; c.ForceDefaultTenant = true }, "bob@mail.contoso.com", "contoso.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, func(c *ingest.Config) {
				if tt.mod != nil {
					tt.mod(c)
				}
			})
			body := fmt.Sprintf(`{"user":%q,"txn":"t1","events":[{"event":"MessageNew","mailbox":"INBOX","uid":1}],"unseen":{"INBOX":1}}`, tt.user)
			if a := h.send(t, http.MethodPost, "/v1/dovecot/lua", jsonCT, "dovecot", []byte(body)); a.status != 200 {
				t.Fatalf("status %d: %s", a.status, a.raw)
			}
			if got := h.stored(t); len(got) != 1 || got[0].Tenant != tt.tenant {
				t.Fatalf("stored %+v, want tenant %s", got, tt.tenant)
			}
		})
	}
}

func TestSourceWithoutCredentialsIsDisabled(t *testing.T) {
	h := newHarness(t, func(c *ingest.Config) { c.NativeTokens = nil; c.DovecotUser, c.DovecotPassword = "", "" })
	for _, path := range []string{"/v1/events", "/v1/dovecot/ox", "/v1/dovecot/lua"} {
		a := h.send(t, http.MethodPost, path, jsonCT, "native", []byte(oneNew))
		if a.status != 404 || a.errorCode() != ingest.CodeDisabled {
			t.Errorf("%s: %d %q, want 404 %s", path, a.status, a.errorCode(), ingest.CodeDisabled)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*ingest.Config)
	}{
		{"user without password", func(c *ingest.Config) { c.DovecotPassword = "" }},
		{"bad default tenant", func(c *ingest.Config) { c.DefaultTenant = "localhost" }},
		{"forced without default", func(c *ingest.Config) { c.ForceDefaultTenant = true }},
		{"missing token file", func(c *ingest.Config) { c.NativeTokenFile = "/nonexistent/token" }},
		{"zero limits", func(c *ingest.Config) { c.MaxEvents = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ingest.DefaultConfig()
			cfg.DovecotUser, cfg.DovecotPassword = dovecotUser, dovecotPassword
			tt.mod(&cfg)
			if _, err := ingest.New(cfg, ingest.Deps{Publisher: &ingest.Publisher{}}); err == nil {
				t.Fatal("New accepted a bad config")
			}
		})
	}
}

func TestCredentialFiles(t *testing.T) {
	dir := t.TempDir()
	tokenFile, passFile := dir+"/tokens", dir+"/password"
	testfs.WriteFile(t, tokenFile, "\nfile-token-1\n  file-token-2  \n", 0o600)
	testfs.WriteFile(t, passFile, "file-password\n", 0o600)
	h := newHarness(t, func(c *ingest.Config) {
		c.NativeTokens, c.NativeTokenFile = nil, tokenFile
		c.DovecotPassword, c.DovecotPasswordFile = "", passFile
	})
	req, _ := http.NewRequest(http.MethodPost, h.url+"/v1/events", strings.NewReader(oneNew))
	req.Header.Set("Content-Type", jsonCT)
	req.Header.Set("Authorization", "Bearer file-token-2")
	if a := h.do(t, req); a.status != 200 {
		t.Fatalf("token from file: %d %s", a.status, a.raw)
	}
	req, _ = http.NewRequest(http.MethodPut, h.url+"/v1/dovecot/ox", strings.NewReader(oxBody))
	req.Header.Set("Content-Type", jsonCT)
	req.SetBasicAuth(dovecotUser, "file-password")
	if a := h.do(t, req); a.status != 200 {
		t.Fatalf("password from file: %d %s", a.status, a.raw)
	}
}

func TestMetrics(t *testing.T) {
	h := newHarness(t)
	h.send(t, http.MethodPost, "/v1/events", ndjsonT, "native", []byte(oneNew+"\n"+oneNew+"\n"))
	h.send(t, http.MethodPost, "/v1/events", jsonCT, "", []byte(oneNew))
	h.send(t, http.MethodPost, "/v1/events", jsonCT, "native", []byte(`{"kind":"new"}`))
	metrics := string(h.send(t, http.MethodGet, "/metrics", "", "", nil).raw)
	for _, want := range []string{
		`pushproxy_ingest_events_total{outcome="stored",source="native"} 1`,
		`pushproxy_ingest_events_total{outcome="duplicate",source="native"} 1`,
		`pushproxy_ingest_events_total{outcome="rejected",source="native"} 1`,
		`pushproxy_ingest_requests_total{code="200",source="native"} 1`,
		`pushproxy_ingest_requests_total{code="401",source="native"} 1`,
		`pushproxy_ingest_rejected_total{reason="unauthorized",source="native"} 1`,
		`pushproxy_ingest_rejected_total{reason="invalid_event",source="native"} 1`,
		`pushproxy_ingest_publish_duration_seconds_count{source="native"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestHealthAndReady(t *testing.T) {
	h := newHarness(t)
	for _, path := range []string{"/healthz", "/readyz"} {
		if a := h.send(t, http.MethodGet, path, "", "", nil); a.status != 200 {
			t.Errorf("%s: %d %s", path, a.status, a.raw)
		}
	}
}

// TestLuaEmptyTransaction: a transaction with nothing to report stores
// nothing and succeeds.
func TestLuaEmptyTransaction(t *testing.T) {
	h := newHarness(t)
	a := h.send(t, http.MethodPost, "/v1/dovecot/lua", jsonCT, "dovecot", []byte(`{"v":1,"user":"alice@example.com","txn":"t","events":[]}`))
	if a.status != 200 || a.body["stored"] != float64(0) {
		t.Fatalf("%d %s", a.status, a.raw)
	}
	if got := h.stored(t); len(got) != 0 {
		t.Fatalf("stored %v", got)
	}
}

func TestStoredEventsAreValid(t *testing.T) {
	h := newHarness(t)
	h.send(t, http.MethodPut, "/v1/dovecot/ox", jsonCT, "dovecot", []byte(oxBody))
	for _, e := range h.stored(t) {
		if e.Source != events.SourceDovecotOX || !e.ReceivedAt.Equal(now) {
			t.Fatalf("stored %+v", e)
		}
		data, _ := e.Encode()
		if bytes.Contains(data, []byte("quoted")) || bytes.Contains(data, []byte("Hello body")) || bytes.Contains(data, []byte("bob@")) {
			t.Fatalf("message content reached the stream: %s", data)
		}
	}
}

// TestSameChangeTwiceInOneRequest sends one change twice in a batch: it is
// stored once, and the copy is answered as a duplicate of the original
// (on a clustered stream, publishing both raced and answered 503).
func TestSameChangeTwiceInOneRequest(t *testing.T) {
	h := newHarness(t)
	body := "[" + oneNew + "," + oneNew + "]"
	a := h.send(t, http.MethodPost, "/v1/events", jsonCT, "native", []byte(body))
	if a.status != http.StatusOK {
		t.Fatalf("status %d: %s", a.status, a.raw)
	}
	if got := outcomes(a); got != "stored@1,duplicate@1" {
		t.Fatalf("outcomes %s, want stored@1,duplicate@1", got)
	}
	if n := len(h.stored(t)); n != 1 {
		t.Fatalf("stream holds %d messages, want 1", n)
	}
}

// TestCredentialRateLimit sends more requests than a credential's burst: the
// rest get 429 with Retry-After and store nothing.
func TestCredentialRateLimit(t *testing.T) {
	h := newHarness(t, func(c *ingest.Config) { c.CredentialRate, c.CredentialBurst = 0.01, 2 })
	var statuses []int
	for i := range 4 {
		body := `{"user":"alice@example.com","kind":"new","change_id":"rate-` + strconv.Itoa(i) + `"}`
		a := h.send(t, http.MethodPost, "/v1/events", jsonCT, "native", []byte(body))
		statuses = append(statuses, a.status)
		if a.status == http.StatusTooManyRequests && (a.header.Get("Retry-After") == "" || a.errorCode() != ingest.CodeRateLimited) {
			t.Fatalf("429 without Retry-After or code: %v %s", a.header, a.raw)
		}
	}
	if fmt.Sprint(statuses) != "[200 200 429 429]" {
		t.Fatalf("statuses %v, want two served then 429", statuses)
	}
	if n := len(h.stored(t)); n != 2 {
		t.Fatalf("stream holds %d events, want 2", n)
	}
}
