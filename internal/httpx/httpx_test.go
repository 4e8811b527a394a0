package httpx

import (
	"bytes"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

// trusting returns a client from NewClient that trusts srv's certificate.
func trusting(srv *httptest.Server, cfg ClientConfig) *http.Client {
	c := NewClient(cfg)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	c.Transport.(*http.Transport).TLSClientConfig.RootCAs = pool
	return c
}

func server(t *testing.T, http2 bool) *httptest.Server {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Proto", r.Proto)
	}))
	srv.EnableHTTP2 = http2
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestNewClientProtocols(t *testing.T) {
	tests := []struct {
		name       string
		serverH2   bool
		http2Only  bool
		wantProto  string
		wantFailed bool
	}{
		{"h2 server", true, false, "HTTP/2.0", false},
		{"h1 server", false, false, "HTTP/1.1", false},
		{"h2 only, h2 server", true, true, "HTTP/2.0", false},
		{"h2 only, h1 server", false, true, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := server(t, tt.serverH2)
			resp, err := trusting(srv, ClientConfig{HTTP2Only: tt.http2Only}).Get(srv.URL)
			if tt.wantFailed {
				if err == nil {
					resp.Body.Close()
					t.Fatal("HTTP/2-only client talked to an HTTP/1.1 server")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if got := resp.Header.Get("X-Proto"); got != tt.wantProto {
				t.Errorf("protocol %s, want %s", got, tt.wantProto)
			}
		})
	}
}

func TestDialControl(t *testing.T) {
	srv := server(t, true)
	refused := errors.New("refused")
	var seen string
	c := trusting(srv, ClientConfig{DialControl: func(_, address string, _ syscall.RawConn) error {
		seen = address
		return refused
	}})
	_, err := c.Get(srv.URL)
	if !errors.Is(err, refused) {
		t.Fatalf("error %v, want the dial control's error", err)
	}
	if !strings.HasPrefix(srv.URL, "https://"+seen) {
		t.Errorf("dial control saw %q for %s", seen, srv.URL)
	}
	if c.Transport.(*http.Transport).Proxy != nil {
		t.Error("proxy set although addresses are checked")
	}
}

func TestRootCAs(t *testing.T) {
	srv := server(t, true)
	trusted := x509.NewCertPool()
	trusted.AddCert(srv.Certificate())
	tests := []struct {
		name    string
		roots   *x509.CertPool
		wantErr bool
	}{
		{"system roots do not know the test CA", nil, true},
		{"configured roots trust it", trusted, false},
		{"other roots do not", x509.NewCertPool(), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := NewClient(ClientConfig{RootCAs: tt.roots}).Get(srv.URL)
			if err == nil {
				resp.Body.Close()
			}
			var unknown x509.UnknownAuthorityError
			switch {
			case tt.wantErr && !errors.As(err, &unknown):
				t.Fatalf("error %v, want an unknown authority", err)
			case !tt.wantErr && err != nil:
				t.Fatal(err)
			}
		})
	}
}

func TestReadBody(t *testing.T) {
	r := bytes.NewReader(bytes.Repeat([]byte{'x'}, 2*MaxBody))
	if got := ReadBody(r); len(got) != MaxBody {
		t.Errorf("read %d bytes, want %d", len(got), MaxBody)
	}
	if r.Len() != 0 {
		t.Errorf("%d bytes left unread", r.Len())
	}
}

func TestNoRedirects(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			w.WriteHeader(http.StatusOK)
			return
		}
		http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	for _, tt := range []struct {
		noRedirects bool
		want        int
	}{{false, http.StatusOK}, {true, http.StatusTemporaryRedirect}} {
		resp, err := NewClient(ClientConfig{NoRedirects: tt.noRedirects}).Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("NoRedirects %v: status %d, want %d", tt.noRedirects, resp.StatusCode, tt.want)
		}
	}
}

// TestWriteGate checks that a closed gate keeps a request's bytes from
// the peer, on a new connection and on one kept from before, and that
// the client works again once it opens.
func TestWriteGate(t *testing.T) {
	for _, http2 := range []bool{false, true} {
		var received atomic.Int32
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			received.Add(1)
		}))
		srv.EnableHTTP2 = http2
		srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes the gate cuts short
		srv.StartTLS()
		t.Cleanup(srv.Close)
		held := errors.New("held")
		var closed atomic.Bool
		c := trusting(srv, ClientConfig{WriteGate: func() error {
			if closed.Load() {
				return held
			}
			return nil
		}})
		post := func() error {
			resp, err := c.Post(srv.URL, "text/plain", strings.NewReader("count"))
			if err == nil {
				resp.Body.Close()
			}
			return err
		}
		for i, step := range []struct {
			closed bool
			want   int32 // requests the server has received after the step
		}{{true, 0}, {false, 1}, {true, 1}, {false, 2}} {
			closed.Store(step.closed)
			err := post()
			if (err != nil) != step.closed {
				t.Errorf("http2 %v, step %d (gate closed %v): error %v", http2, i, step.closed, err)
			}
			if got := received.Load(); got != step.want {
				t.Errorf("http2 %v, step %d (gate closed %v): server received %d requests, want %d", http2, i, step.closed, got, step.want)
			}
		}
	}
}
