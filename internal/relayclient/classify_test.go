package relayclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/tokens"
)

// The tokens issuer is what the dispatcher and the probe pass as Tokens.
var _ TokenSource = (*tokens.Issuer)(nil)

func TestClassify(t *testing.T) {
	const uri = "https://relay.example/PushNotifications"
	tests := []struct {
		name      string
		err       error
		wantClass Class
		wantIn    []string
	}{
		{"nil", nil, "", nil},
		{"deadline", fmt.Errorf("probing: %w", context.DeadlineExceeded), ClassNetworking, []string{"did not answer in time"}},
		{"cancelled", context.Canceled, ClassUnknown, []string{"cancelled"}},
		{"other", errors.New("disk on fire"), ClassUnknown, []string{"an unknown error", "disk on fire"}},
		{
			"host not found",
			&Error{Class: ClassNetworking, URI: uri, Err: &net.DNSError{Err: "no such host", Name: "relay.example", IsNotFound: true}},
			ClassNetworking, []string{"could not be established", `the host "relay.example" could not be found`, "pushctl proxy show"},
		},
		{
			"wrapped in retry context",
			fmt.Errorf("giving up after 3 attempts: %w", &Error{Class: ClassServer, URI: uri, Status: 502, RequestID: "rid"}),
			ClassUnknown, []string{"failed", "502 Bad Gateway", "client-request-id rid"},
		},
		{
			"token failure",
			&Error{Class: ClassAuthentication, URI: uri, Err: errors.New("getting an S2S token: certificate expired")},
			ClassAuthentication, []string{"it was not possible to authenticate to " + uri, "certificate expired", "pushctl auth show"},
		},
		{
			"401 without challenge",
			&Error{Class: ClassAuthentication, URI: uri, Status: 401, Fault: &relayproto.Fault{Message: "token expired"}},
			ClassAuthentication, []string{"it was not possible to authenticate", "token expired", "clocks"},
		},
		{
			"invalid URI",
			&Error{Class: ClassPushNotifications, URI: "relay", Err: fmt.Errorf("%w: bad", errInvalidURI)},
			ClassPushNotifications, []string{"the service URI relay is not valid", "pushctl proxy enable --uri"},
		},
		{
			"unknown class",
			&Error{Class: ClassUnknown, URI: uri, Err: errors.New("odd")},
			ClassUnknown, []string{"an unknown error occurred publishing to " + uri, "odd"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			class, msg := Classify(tt.err)
			if class != tt.wantClass {
				t.Errorf("class %q, want %q (%s)", class, tt.wantClass, msg)
			}
			for _, s := range tt.wantIn {
				if !strings.Contains(msg, s) {
					t.Errorf("message %q lacks %q", msg, s)
				}
			}
		})
	}
}

func TestClassifyUntrustedCertificate(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c := New(Config{Tokens: staticTokens{token: "t"}})
	_, err := c.Publish(t.Context(), srv.URL+basePath, batchOf(1))
	class, msg := Classify(err)
	if class != ClassNetworking || !strings.Contains(msg, "a secure connection") || !strings.Contains(msg, "TLS certificate") {
		t.Fatalf("Classify: %s %q", class, msg)
	}
}

func FuzzParseFault(f *testing.F) {
	f.Add([]byte(`{"Message":"busy","CanRetry":true,"BackOffTimeInMilliseconds":200}`), false)
	f.Add([]byte(`{"Message":"no","CanRetry":false}`), true)
	f.Add([]byte(`{"BackOffTimeInMilliseconds":99999999999999}`), true)
	f.Add([]byte(`<html>bad gateway</html>`), true)
	f.Add([]byte(``), false)
	f.Fuzz(func(t *testing.T, data []byte, canRetry bool) {
		fault := parseFault(data, canRetry)
		if fault == nil {
			return
		}
		if d := fault.BackOff(); d < 0 || d > relayproto.MaxBackOff {
			t.Fatalf("back-off %s out of range", d)
		}
		e := &Error{Class: ClassServer, URI: "https://relay.example", Status: 503, Fault: fault}
		if e.Temporary() != fault.CanRetry {
			t.Fatal("Temporary disagrees with CanRetry")
		}
		_ = e.Error()
		_, _ = Classify(e)
	})
}
