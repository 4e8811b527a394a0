// Package webui is the relay's devices page for standalone use: it lists
// the devices that the built-in "log" provider has sent badges to, each with
// its latest badge, and follows changes live with Server-Sent Events, so an
// operator trying pushproxy out sees badges change as mail events arrive.
//
// Routes, under the path given to Register (e.g. /devices):
//
//	GET /devices              the page, rendered with the current devices
//	GET /devices/devices.json the current devices as JSON
//	GET /devices/events       the event stream: a "snapshot" event with all
//	                          devices, then an "update" event per change
//
// Devices are shown by reference (providers.DeviceRef), never by address: a
// Web Push address carries the subscriber's keys. A relay knows nothing
// more of a device; where the page runs beside the on-premises side
// (pushctl standalone), Names adds the user and the device's label.
package webui

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/httpjson"
	"github.com/pushproxy/pushproxy/internal/providers/logpush"
)

// heartbeat is how often an idle event stream sends a comment, so proxies
// and browsers keep it open.
const heartbeat = 15 * time.Second

//go:embed page.html
var pageHTML string

// Device is one row of the page: a device's latest badge.
type Device struct {
	Tenant string `json:"tenant"`
	// User and Label come from Names, when the page has it.
	User           string    `json:"user,omitempty"`
	Label          string    `json:"label,omitempty"`
	AppID          string    `json:"appId"`
	Device         string    `json:"device"`
	Count          int       `json:"count"`
	BackgroundSync bool      `json:"backgroundSync"`
	Language       string    `json:"language,omitempty"`
	Notification   string    `json:"notification"`
	Updated        time.Time `json:"updated"`
}

// Key identifies the row of a device: its app and reference.
func (d Device) Key() string { return d.AppID + "/" + d.Device }

// fromEntry turns a logpush entry into a row.
func fromEntry(e logpush.Entry) Device {
	return Device{
		Tenant:         e.Badge.Tenant,
		AppID:          e.Badge.AppID,
		Device:         e.Ref,
		Count:          max(e.Badge.Count, 0),
		BackgroundSync: e.Badge.BackgroundSync,
		Language:       e.Badge.Language,
		Notification:   e.Badge.ID,
		Updated:        e.Updated.UTC(),
	}
}

// Names finds the user and the label of the device ref of tenant; empty
// strings when it does not know them. It must be safe for concurrent use.
type Names func(ctx context.Context, tenant, ref string) (user, label string)

// rows converts entries into rows, named by names when it is set.
func rows(ctx context.Context, entries []logpush.Entry, names Names) []Device {
	out := make([]Device, len(entries))
	for i, e := range entries {
		out[i] = fromEntry(e)
		if names != nil {
			out[i].User, out[i].Label = names(ctx, out[i].Tenant, out[i].Device)
		}
	}
	return out
}

// Page serves the devices page over a logpush provider.
type Page struct {
	src   *logpush.Provider
	log   zerolog.Logger
	stop  <-chan struct{}
	tmpl  *template.Template
	names Names
}

// New returns the page for src. Event streams end when stop is closed (the
// server is shutting down), so they do not hold up a graceful shutdown.
func New(src *logpush.Provider, log zerolog.Logger, stop <-chan struct{}) *Page {
	tmpl := template.Must(template.New("page").Funcs(template.FuncMap{
		"time": func(t time.Time) string { return t.Format(time.RFC3339) },
	}).Parse(pageHTML))
	return &Page{src: src, log: log, stop: stop, tmpl: tmpl}
}

// WithNames makes the page show each device's user and label as names
// finds them, and returns the page.
func (p *Page) WithNames(names Names) *Page {
	p.names = names
	return p
}

// Register adds the page's routes under path (e.g. "/devices") to mux.
func (p *Page) Register(mux *http.ServeMux, path string) {
	mux.HandleFunc("GET "+path, p.page(path))
	mux.HandleFunc("GET "+path+"/devices.json", p.json)
	mux.HandleFunc("GET "+path+"/events", p.events)
}

// page renders the HTML page with the current devices, so it shows them
// even before its script connects to the event stream.
func (p *Page) page(path string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		devices := rows(r.Context(), p.src.Devices(), p.names)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		err := p.tmpl.Execute(w, map[string]any{"Devices": devices, "Events": path + "/events"})
		if err != nil {
			p.log.Debug().Err(err).Msg("writing devices page")
		}
	}
}

// json answers the current devices.
func (p *Page) json(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	httpjson.Write(w, http.StatusOK, map[string][]Device{"devices": rows(r.Context(), p.src.Devices(), p.names)})
}

// events streams a snapshot and then every update until the client goes
// away or the server stops.
func (p *Page) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() {
		select {
		case <-p.stop:
			cancel()
		case <-ctx.Done():
		}
	}()

	// Subscribe before the snapshot so that no update falls in between.
	sub := p.src.Subscribe()
	defer sub.Close()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, "retry: 2000\n\n"); err != nil {
		return
	}
	if err := send(w, rc, "snapshot", rows(ctx, p.src.Devices(), p.names)); err != nil {
		return
	}
	for {
		next, stop := context.WithTimeout(ctx, heartbeat)
		entries, err := sub.Next(next)
		stop()
		switch {
		case err == nil:
			err = send(w, rc, "update", rows(ctx, entries, p.names))
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			_, err = fmt.Fprint(w, ": ping\n\n")
			if err == nil {
				err = rc.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}

// send writes one event with v as its JSON data and flushes it.
func send(w http.ResponseWriter, rc *http.ResponseController, event string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data); err != nil {
		return err
	}
	return rc.Flush()
}
