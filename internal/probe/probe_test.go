package probe_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/probe"
	"github.com/pushproxy/pushproxy/internal/relayclient"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/settings"
)

// staticToken is a token source that always gives the same token or error.
type staticToken struct {
	token string
	err   error
}

func (s staticToken) Token(context.Context) (string, error) { return s.token, s.err }

// testRelay speaks the relay protocol: it accepts the bearer token "good",
// answers 401 with a challenge otherwise, and answers a monitoring
// notification as delivered.
func testRelay(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/PushNotifications"+relayproto.PublishPath {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer good" {
			w.Header().Set("WWW-Authenticate", `Bearer client_id="00000003-7070-7878-0000-000000000000", trusted_issuers="00000002-7070-7878-0000-000000000000@*"`)
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(relayproto.Fault{Message: "token signed with an unregistered certificate"})
			return
		}
		var req relayproto.Request
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Notifications) != 1 || !req.Notifications[0].IsMonitoring() {
			t.Errorf("relay got %+v (%v), want one monitoring notification", req, err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		n := req.Notifications[0]
		if n.Payload.UnseenEmailCount != 1 || n.Recipients[0].DeviceID != strings.Repeat("0", 64) {
			t.Errorf("probe notification %+v", n)
		}
		_ = json.NewEncoder(w).Encode(relayproto.Response{Results: []relayproto.NotificationResult{{
			ID: n.ID, Devices: []relayproto.DeviceResult{{AppID: relayproto.MonitoringAppID, DeviceID: n.Recipients[0].DeviceID, Status: relayproto.DeviceDelivered}},
		}}})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// closedURL is a relay URI where nothing listens.
func closedURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr + "/PushNotifications"
}

func TestRun(t *testing.T) {
	conn := brokertest.Start(t)
	store, err := settings.Open(context.Background(), conn.JS)
	if err != nil {
		t.Fatal(err)
	}
	relay := testRelay(t)
	relayURI := relay.URL + "/PushNotifications"

	tests := []struct {
		name      string
		enable    bool
		uri       string
		token     staticToken
		wantType  probe.ResultType
		wantClass relayclient.Class
		wantError string
	}{
		{"proxy disabled", false, relayURI, staticToken{token: "good"}, probe.Failed, relayclient.ClassPushNotifications, "Push Notifications settings could not be found: the push notification proxy is not enabled; run pushctl proxy enable --organization"},
		{"success", true, relayURI, staticToken{token: "good"}, probe.Succeeded, "", ""},
		{"token rejected", true, relayURI, staticToken{token: "forged"}, probe.Failed, relayclient.ClassAuthentication, "it was not possible to authenticate to " + relayURI},
		{"no token", true, relayURI, staticToken{err: errors.New("loading certificate: no such file")}, probe.Failed, relayclient.ClassAuthentication, "it was not possible to authenticate"},
		{"relay unreachable", true, closedURL(t), staticToken{token: "good"}, probe.Failed, relayclient.ClassNetworking, "a connection to the push notification service at"},
		{"wrong uri", true, relay.URL + "/Elsewhere", staticToken{token: "good"}, probe.Failed, relayclient.ClassPushNotifications, "could not be found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.enable {
				if _, _, err := store.EnableProxy(ctx, "fabrikam.com", tt.uri); err != nil {
					t.Fatal(err)
				}
			} else if _, _, err := store.DisableProxy(ctx); err != nil {
				t.Fatal(err)
			}
			client := relayclient.New(relayclient.Config{Tokens: tt.token, Timeout: 5 * time.Second})
			r := probe.Run(ctx, probe.Deps{Settings: store, Tokens: tt.token, Relay: client})
			if r.ResultType != tt.wantType || r.Class != tt.wantClass || !strings.Contains(r.Error, tt.wantError) {
				t.Fatalf("result %+v\nwant %s, class %q, error containing %q", r, tt.wantType, tt.wantClass, tt.wantError)
			}
			if r.Name != probe.Name || r.At.IsZero() {
				t.Errorf("name %q at %s", r.Name, r.At)
			}
			if (r.Exception == "") != r.Succeeded() {
				t.Errorf("exception %q for %s", r.Exception, r.ResultType)
			}
			if r.Succeeded() && r.Latency <= 0 {
				t.Errorf("latency %s", r.Latency)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		r    probe.Result
		want string
	}{
		{probe.Result{ResultType: probe.Succeeded}, "ResultType : Succeeded\nError      :\nException  :\n"},
		{probe.Result{ResultType: probe.Failed, Error: "Push Notifications settings could not be found:\n  fix it", Exception: "boom"},
			"ResultType : Failed\nError      : Push Notifications settings could not be found: fix it\nException  : boom\n"},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		if err := tt.r.Format(&b); err != nil {
			t.Fatal(err)
		}
		if b.String() != tt.want {
			t.Errorf("Format:\n%q\nwant\n%q", b.String(), tt.want)
		}
	}
}

func TestPublishAndLast(t *testing.T) {
	conn := brokertest.Start(t)
	ctx := context.Background()
	if _, err := probe.Last(ctx, conn.JS, probe.SubjectConnectivity); !errors.Is(err, probe.ErrNoResult) {
		t.Fatalf("Last on an empty stream: %v", err)
	}
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for i, rt := range []probe.ResultType{probe.Succeeded, probe.Failed} {
		r := probe.Result{Name: probe.Name, ResultType: rt, Class: relayclient.ClassNetworking, Latency: 1500 * time.Microsecond, At: at.Add(time.Duration(i) * time.Minute), URI: "http://relay"}
		if err := probe.Publish(ctx, conn.JS, probe.SubjectConnectivity, r); err != nil {
			t.Fatal(err)
		}
	}
	got, err := probe.Last(ctx, conn.JS, probe.SubjectConnectivity)
	if err != nil {
		t.Fatal(err)
	}
	want := probe.Result{Name: probe.Name, ResultType: probe.Failed, Class: relayclient.ClassNetworking, Latency: 1500 * time.Microsecond, At: at.Add(time.Minute), URI: "http://relay"}
	if got != want {
		t.Fatalf("Last = %+v\nwant %+v", got, want)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := probe.NewMetrics(reg, "probe", "connectivity probe")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := probe.NewMetrics(reg, "probe", "connectivity probe"); err == nil {
		t.Fatal("registering twice succeeded")
	}
	fail := probe.Result{ResultType: probe.Failed, Class: relayclient.ClassNetworking}
	ok := probe.Result{ResultType: probe.Succeeded, Latency: 20 * time.Millisecond, At: time.Unix(1700000000, 0)}
	for i, tt := range []struct {
		r    probe.Result
		want int
	}{{fail, 1}, {fail, 2}, {ok, 0}, {fail, 1}} {
		if got := m.Observe(tt.r); got != tt.want {
			t.Fatalf("observation %d: %d consecutive failures, want %d", i, got, tt.want)
		}
	}
	expected := `
# HELP pushproxy_probe_consecutive_failures Failures of the connectivity probe since its last success.
# TYPE pushproxy_probe_consecutive_failures gauge
pushproxy_probe_consecutive_failures 1
# HELP pushproxy_probe_last_success 1 if the last connectivity probe succeeded, 0 if it failed.
# TYPE pushproxy_probe_last_success gauge
pushproxy_probe_last_success 0
# HELP pushproxy_probe_last_success_timestamp_seconds When the last successful connectivity probe ran, in Unix seconds.
# TYPE pushproxy_probe_last_success_timestamp_seconds gauge
pushproxy_probe_last_success_timestamp_seconds 1.7e+09
# HELP pushproxy_probe_runs_total Runs of the connectivity probe, by result and failure class.
# TYPE pushproxy_probe_runs_total counter
pushproxy_probe_runs_total{class="",result="Succeeded"} 1
pushproxy_probe_runs_total{class="Networking",result="Failed"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expected),
		"pushproxy_probe_consecutive_failures", "pushproxy_probe_last_success", "pushproxy_probe_last_success_timestamp_seconds", "pushproxy_probe_runs_total"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(reg, "pushproxy_probe_latency_seconds"); n != 1 {
		t.Fatalf("latency histogram count %d", n)
	}
}
