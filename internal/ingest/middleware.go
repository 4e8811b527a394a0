package ingest

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"

	"github.com/pushproxy/pushproxy/internal/credentials"
	"github.com/pushproxy/pushproxy/internal/httpjson"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// Error codes of ingest's JSON errors (httpjson.Error.Code), also the reason
// label of pushproxy_ingest_rejected_total.
const (
	CodeMalformed        = sources.CodeMalformed
	CodeTooLarge         = sources.CodeTooLarge
	CodeUnauthorized     = "unauthorized"
	CodeForbidden        = "forbidden"
	CodeUnsupportedMedia = "unsupported_media_type"
	CodeInvalid          = "invalid_event"
	CodeUnavailable      = "unavailable"
	CodeDisabled         = "source_disabled"
	CodeInternal         = "internal"
)

// Middleware wraps a handler with a check that may answer first.
type Middleware func(http.Handler) http.Handler

// Chain applies middleware to h, the first one outermost.
func Chain(h http.Handler, mw ...Middleware) http.Handler {
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	return h
}

// Reject answers with the JSON error e ({"error":{...}}, as
// httpjson.WriteError writes it) and notes it for the metrics and logs of a
// source route.
func Reject(w http.ResponseWriter, e *httpjson.Error) { rejectEvents(w, e, nil) }

// rejectEvents answers e with the outcomes of the rejected events.
func rejectEvents(w http.ResponseWriter, e *httpjson.Error, bad []Outcome) {
	if rec, ok := w.(*recorder); ok {
		rec.err = e
	}
	httpjson.Write(w, e.Status, Rejection{Error: e, Events: bad})
}

// RequireAuth answers 401 with a WWW-Authenticate challenge unless a
// accepts the request's credentials.
//
// It stores the credentials' scope in the request's context (see Scoper)
// and names the credential in the request's log line, never its secret.
func RequireAuth(a Authenticator) Middleware {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var (
				scope credentials.Scope
				ok    bool
			)
			if sc, isScoper := a.(Scoper); isScoper {
				scope, ok = sc.Scope(r)
			} else if ok = a.Authenticate(r); ok {
				scope = legacyScope("source", credentials.RoleEvents)
			}
			if !ok {
				w.Header().Set("WWW-Authenticate", a.Challenge())
				Reject(w, &httpjson.Error{Status: http.StatusUnauthorized, Code: CodeUnauthorized, Message: "missing or wrong credentials"})
				return
			}
			if rec, isRec := w.(*recorder); isRec {
				rec.credential = scope.ID
			}
			next.ServeHTTP(w, r.WithContext(credentials.NewContext(r.Context(), scope)))
		})
	}
}

// Forbidden answers 403: the credentials are valid but do not reach what
// the request asks for. Nothing is stored or returned.
func Forbidden(w http.ResponseWriter, message string) {
	Reject(w, &httpjson.Error{Status: http.StatusForbidden, Code: CodeForbidden, Message: message})
}

// RequireMediaType answers 415 unless the request's Content-Type, without
// its parameters, is one of types.
func RequireMediaType(types ...string) Middleware {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if mt := MediaType(r); !slices.Contains(types, mt) {
				Reject(w, &httpjson.Error{
					Status:  http.StatusUnsupportedMediaType,
					Code:    CodeUnsupportedMedia,
					Message: fmt.Sprintf("Content-Type %q is not accepted here; send %s", sources.Clip(r.Header.Get("Content-Type")), strings.Join(types, " or ")),
				})
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// MediaType is the request's Content-Type in lower case without
// parameters, or "" when it is missing or unreadable.
func MediaType(r *http.Request) string {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return ""
	}
	return mt
}

// LimitBody answers 413 for a declared Content-Length above n and makes
// reading more than n bytes of the body fail (see ReadBody).
func LimitBody(n int64) Middleware {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > n {
				Reject(w, tooLarge(n))
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, n)
			next.ServeHTTP(w, r)
		})
	}
}

// ReadBody reads the whole request body; past the LimitBody bound it
// returns a 413 error, and a broken upload is a 400.
func ReadBody(r *http.Request) ([]byte, *httpjson.Error) {
	body, err := readAll(r.Body, r.ContentLength)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, tooLarge(tooBig.Limit)
	case err != nil:
		return nil, sources.Malformed("reading the request body: %v", err)
	}
	return body, nil
}

// maxPresize bounds the buffer readAll makes from a declared length,
// which the client may not send.
const maxPresize = 1 << 20

// readAll is io.ReadAll that starts with room for a declared length n
// (-1 when unknown), so that a body is read without growing the buffer.
func readAll(rd io.Reader, n int64) ([]byte, error) {
	if n < 0 || n > maxPresize {
		return io.ReadAll(rd)
	}
	b := make([]byte, 0, n+1) // +1: reading EOF needs no growth
	for {
		m, err := rd.Read(b[len(b):cap(b)])
		b = b[:len(b)+m]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}

func tooLarge(limit int64) *httpjson.Error {
	return sources.TooLarge("the request body is larger than %d bytes", limit)
}

// recorder remembers the status and error of an answer for metrics and logs.
type recorder struct {
	http.ResponseWriter
	status int
	err    *httpjson.Error
	// credential is the id of the request's credential, for the log.
	credential string
}

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}
