package bareingest_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/benchtest/bareingest"
	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
)

func TestHandlerStoresEveryEventOrNone(t *testing.T) {
	conn := brokertest.Start(t)
	keyer := brokertest.Keyer(t, conn)
	srv := httptest.NewServer(&bareingest.Handler{JS: conn.JS, Subject: func(user string) string { return keyer.Subject("fabrikam.com", user) }})
	defer srv.Close()
	stream, err := conn.JS.Stream(context.Background(), broker.StreamMail)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		body   string
		status int
		stored uint64 // the stream's messages after the request
	}{
		{"one event", `{"user":"a@fabrikam.com","change_id":"c1"}`, http.StatusOK, 1},
		{"a batch", "{\"user\":\"a@fabrikam.com\",\"change_id\":\"c2\"}\n{\"user\":\"b@fabrikam.com\",\"change_id\":\"c3\"}\n", http.StatusOK, 3},
		{"a batch sent again: deduplicated", "{\"user\":\"a@fabrikam.com\",\"change_id\":\"c2\"}\n{\"user\":\"b@fabrikam.com\",\"change_id\":\"c3\"}\n", http.StatusOK, 3},
		{"an undecodable line: nothing stored", "{\"user\":\"a@fabrikam.com\",\"change_id\":\"c4\"}\nnot json\n", http.StatusBadRequest, 3},
		{"a JSON array", `[{"user":"a@fabrikam.com","change_id":"c5"},{"user":"b@fabrikam.com","change_id":"c6"}]`, http.StatusOK, 5},
		{"an empty array: nothing stored", `[]`, http.StatusBadRequest, 5},
		{"an array not closed: nothing stored", `[{"user":"a@fabrikam.com","change_id":"c7"}`, http.StatusBadRequest, 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Post(srv.URL, "application/x-ndjson", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("status %d (%s), want %d", resp.StatusCode, body, tc.status)
			}
			info, err := stream.Info(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if info.State.Msgs != tc.stored {
				t.Errorf("%d events stored, want %d", info.State.Msgs, tc.stored)
			}
		})
	}
}
