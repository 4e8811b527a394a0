// Package forward is the relay's anchor in the benchmarks: a bare HTTPS
// handler of the relay's publish path that posts each device's badge to
// an APNs push service and answers it delivered. It does none of the
// relay's own work (no token check, quota, routing, lanes or metrics), so
// that a benchmark comparing the relay with it measures what the relay
// adds to forwarding.
package forward

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"

	"github.com/pushproxy/pushproxy/internal/httpjson"
	"github.com/pushproxy/pushproxy/internal/relayproto"
)

// Config says where a Forwarder sends and how it serves.
type Config struct {
	// Push is the push service's base URL (an APNs provider API).
	Push string
	// Client sends to the push service (HTTP/2).
	Client *http.Client
	// Slots bounds the sends in flight at once, as an organization+app's
	// share of a lane bounds them at the relay.
	Slots int
	// Path is the publish path served (the relay's base path and
	// relayproto.PublishPath).
	Path string
	// Authorization is every send's Authorization header (an APNs
	// provider token: "bearer <JWT>"); none when empty.
	Authorization string
}

// Forwarder is the bare handler. Started with Start, it serves itself
// over HTTPS with HTTP/2 on a loopback port, with httptest's certificate
// for 127.0.0.1; made with New, it is an http.Handler to serve.
type Forwarder struct {
	mux           *http.ServeMux
	srv           *httptest.Server
	push          string
	authorization string
	hc            *http.Client
	slots         chan struct{}
}

// New returns a Forwarder as cfg says, to be served as a handler of
// cfg.Path.
func New(cfg Config) *Forwarder {
	f := &Forwarder{push: cfg.Push, authorization: cfg.Authorization, hc: cfg.Client, slots: make(chan struct{}, max(cfg.Slots, 1)), mux: http.NewServeMux()}
	f.mux.HandleFunc("POST "+cfg.Path, f.publish)
	return f
}

// ServeHTTP serves cfg.Path's publish requests.
func (f *Forwarder) ServeHTTP(w http.ResponseWriter, r *http.Request) { f.mux.ServeHTTP(w, r) }

// Start serves a Forwarder as cfg says over HTTPS. Close stops it.
func Start(cfg Config) *Forwarder {
	f := New(cfg)
	f.srv = httptest.NewUnstartedServer(f.mux)
	f.srv.EnableHTTP2 = true
	f.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	f.srv.StartTLS()
	return f
}

// URL is the server's base URL (https://127.0.0.1:<port>), with Start.
func (f *Forwarder) URL() string { return f.srv.URL }

// Roots trusts the server's certificate, for its clients, with Start.
func (f *Forwarder) Roots() *x509.CertPool {
	roots := x509.NewCertPool()
	roots.AddCert(f.srv.Certificate())
	return roots
}

// Close stops the server started with Start.
func (f *Forwarder) Close() {
	if f.srv != nil {
		f.srv.Close()
	}
}

// publish forwards every device of a publish request and answers.
func (f *Forwarder) publish(w http.ResponseWriter, r *http.Request) {
	var req relayproto.Request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	resp := relayproto.Response{Results: make([]relayproto.NotificationResult, len(req.Notifications))}
	var wg sync.WaitGroup
	for i, n := range req.Notifications {
		devices := make([]relayproto.DeviceResult, len(n.Recipients))
		resp.Results[i] = relayproto.NotificationResult{ID: n.ID, Devices: devices}
		for j, rc := range n.Recipients {
			wg.Go(func() {
				f.slots <- struct{}{}
				err := f.send(r.Context(), rc, n.Payload.UnseenEmailCount)
				<-f.slots
				devices[j] = relayproto.DeviceResult{AppID: rc.AppID, DeviceID: rc.DeviceID}
				if err != nil {
					devices[j].SetClass(relayproto.ClassTransient)
					return
				}
				devices[j].SetClass(relayproto.ClassDelivered)
			})
		}
	}
	wg.Wait()
	httpjson.Write(w, http.StatusOK, resp)
}

// send posts one badge the way APNs takes it, with the app as the topic.
func (f *Forwarder) send(ctx context.Context, rc relayproto.Recipient, count int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.push+"/3/device/"+rc.DeviceID, strings.NewReader(`{"aps":{"badge":`+strconv.Itoa(count)+`}}`))
	if err != nil {
		return err
	}
	req.Header.Set("content-type", "application/json")
	req.Header.Set("apns-topic", rc.AppID)
	if f.authorization != "" {
		req.Header.Set("authorization", f.authorization)
	}
	resp, err := f.hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("push service answered %d", resp.StatusCode)
	}
	return nil
}
