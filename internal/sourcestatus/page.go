package sourcestatus

import (
	"context"
	_ "embed"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/pushproxy/pushproxy/internal/httpjson"
)

//go:embed page.html
var pageHTML string

// pageData is what the page template renders.
type pageData struct {
	Report
	Now time.Time
}

// Handler serves the report, read by collect on each request: an HTML
// page that refreshes itself every 30 seconds, or JSON when the request
// asks for it (?format=json, or Accept: application/json). A report that
// cannot be read is a 503 with a JSON error.
func Handler(collect func(ctx context.Context) (Report, error)) http.Handler {
	tmpl := template.Must(template.New("page").Funcs(template.FuncMap{
		"time": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"ago": func(now, t time.Time) string {
			return now.Sub(t).Round(time.Second).String()
		},
		"in": func(now, t time.Time) string { return t.Sub(now).Round(time.Minute).String() },
	}).Parse(pageHTML))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rep, err := collect(r.Context())
		if err != nil {
			httpjson.WriteError(w, &httpjson.Error{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "reading the sources' status: " + err.Error()})
			return
		}
		if r.URL.Query().Get("format") == "json" || strings.Contains(r.Header.Get("Accept"), "application/json") {
			httpjson.Write(w, http.StatusOK, rep)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_ = tmpl.Execute(w, pageData{Report: rep, Now: time.Now()})
	})
}
