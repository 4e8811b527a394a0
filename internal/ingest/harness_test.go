package ingest_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/ingest"
	"github.com/pushproxy/pushproxy/internal/ingest/ingesttest"
)

// Credentials of the test server. The golden request files carry them as
// Dovecot and a native client would send them.
const (
	nativeToken     = "native-test-token"
	dovecotUser     = "dovecot"
	dovecotPassword = "dovecot-test-password"
)

// now is the fixed clock of the test server.
var now = time.Date(2025, 1, 31, 9, 30, 0, 0, time.UTC)

type harness struct {
	conn *broker.Conn
	url  string
	reg  *prometheus.Registry
}

// newHarness serves ingest over a fresh embedded JetStream.
func newHarness(t testing.TB, mods ...func(*ingest.Config)) *harness {
	return serveOn(t, brokertest.Start(t), mods...)
}

// serveOn serves ingest over conn with the test credentials, a fixed
// clock and the given config changes.
func serveOn(t testing.TB, conn *broker.Conn, mods ...func(*ingest.Config)) *harness {
	t.Helper()
	cfg := ingest.DefaultConfig()
	cfg.NativeTokens = []string{"old-token", nativeToken}
	cfg.DovecotUser, cfg.DovecotPassword = dovecotUser, dovecotPassword
	cfg.PublishTimeout = 10 * time.Second
	for _, m := range mods {
		m(&cfg)
	}
	reg := prometheus.NewRegistry()
	url := ingesttest.Serve(t, conn, cfg, ingest.Deps{Registry: reg, Now: func() time.Time { return now }}, nil)
	return &harness{conn: conn, url: url, reg: reg}
}

// answer is a response with its JSON body decoded loosely.
type answer struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

// errorCode is error.code of a JSON error answer.
func (a *answer) errorCode() string {
	e, _ := a.body["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

func (a *answer) errorField() string {
	e, _ := a.body["error"].(map[string]any)
	field, _ := e["field"].(string)
	return field
}

// send sends a request; auth is "native", "dovecot" or "" for none.
func (h *harness) send(t testing.TB, method, path, contentType, auth string, body []byte) *answer {
	t.Helper()
	req, err := http.NewRequest(method, h.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	switch auth {
	case "native":
		req.Header.Set("Authorization", "Bearer "+nativeToken)
	case "dovecot":
		req.SetBasicAuth(dovecotUser, dovecotPassword)
	}
	return h.do(t, req)
}

func (h *harness) do(t testing.TB, req *http.Request) *answer {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := &answer{status: resp.StatusCode, header: resp.Header, raw: raw}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &a.body); err != nil {
			t.Fatalf("answer is not JSON: %v: %s", err, raw)
		}
	}
	return a
}

// stored returns every event in the MAIL stream, in order.
func (h *harness) stored(t testing.TB) []events.Event {
	t.Helper()
	return brokertest.Events(t, h.conn.JS)
}
