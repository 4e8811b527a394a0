// Package sources is the contract between ingest and the mail sources,
// each a package below it (native, dovecot, ews, graph): the parsed item,
// the request-level errors a parser returns, and strict JSON decoding whose
// errors name the field and the type it wants. Sources import this package
// and events, never ingest; ingest wires them in.
//
// A parser returns a request-level error for a body that cannot be read at
// all (a *httpjson.Error, e.g. from Malformed or TooLarge, or an
// *events.ValidationError for a field that spoils the whole request), and an
// Item per event otherwise, each with its event or with the
// *events.ValidationError that makes it unusable.
package sources

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/pushproxy/pushproxy/internal/clip"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/httpjson"
)

// Item is one event read from a request, or the reason it is unusable.
// Parsers fill what the source says; ingest adds the source, the tenant when
// the source gave none, the times, and then normalises and validates.
type Item struct {
	Event events.Event
	// Err, when set, is usually an *events.ValidationError naming the field.
	Err error
}

// Error codes of request-level errors, as they appear in httpjson.Error.Code.
const (
	CodeMalformed = "malformed"
	CodeTooLarge  = "too_large"
)

// Malformed is the 400 answer for a body that is not what the source sends.
func Malformed(format string, args ...any) *httpjson.Error {
	return &httpjson.Error{Status: http.StatusBadRequest, Code: CodeMalformed, Message: fmt.Sprintf(format, args...)}
}

// TooLarge is the 413 answer for a request over a size or count limit.
func TooLarge(format string, args ...any) *httpjson.Error {
	return &httpjson.Error{Status: http.StatusRequestEntityTooLarge, Code: CodeTooLarge, Message: fmt.Sprintf(format, args...)}
}

// Invalid returns an *events.ValidationError for field.
func Invalid(field, format string, args ...any) error {
	return &events.ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Object checks that body is one JSON object and answers a malformed
// request otherwise.
func Object(body []byte) error {
	var raw map[string]json.RawMessage
	err := json.Unmarshal(body, &raw)
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &te):
		return Malformed("the body must be a JSON object, got %s", te.Value)
	case err != nil:
		return Malformed("the body is not valid JSON: %v", err)
	case raw == nil:
		return Malformed("the body must be a JSON object, got null")
	}
	return nil
}

// Strict decodes the JSON object data into v, a pointer to a struct. A key
// that names none of the struct's fields is an error naming it, and so is a
// value of the wrong type. Keys match json names as encoding/json matches
// them (exactly, else without regard to case). prefix is put before field
// names in errors (e.g. "events[2]."). Errors are *events.ValidationError.
func Strict(data []byte, v any, prefix string) error {
	if bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
		return Invalid(strings.TrimSuffix(prefix, "."), "must be a JSON object, got null")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return FieldError(err, v, prefix)
	}
	return nil
}

// FieldError turns the error of decoding a JSON value into v (with unknown
// fields disallowed) into an *events.ValidationError naming the field.
func FieldError(err error, v any, prefix string) error {
	if quoted, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if name, uerr := strconv.Unquote(quoted); uerr == nil {
			t := reflect.TypeOf(v)
			for t.Kind() == reflect.Pointer {
				t = t.Elem()
			}
			return Invalid(prefix+Clip(name), "unknown field (known fields: %s)", strings.Join(jsonNames(t), ", "))
		}
	}
	return decodeError(err, prefix)
}

// IsSyntax reports whether err from a json.Decoder means the input is not
// JSON at all (rather than JSON of the wrong shape).
func IsSyntax(err error) bool {
	var se *json.SyntaxError
	return errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF)
}

// Lenient decodes the JSON object data into v like Strict but ignores
// fields v does not name. Sources whose format may grow (Dovecot's OX
// driver) use it.
func Lenient(data []byte, v any, prefix string) error {
	if err := json.Unmarshal(data, v); err != nil {
		return decodeError(err, prefix)
	}
	return nil
}

func decodeError(err error, prefix string) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return Invalid(strings.TrimSuffix(prefix, "."), "must be %s, got %s", describe(te.Type), te.Value)
		}
		return Invalid(prefix+te.Field, "must be %s, got %s", describe(te.Type), te.Value)
	}
	return Invalid(strings.TrimSuffix(prefix, "."), "not valid JSON: %v", err)
}

// describe names the JSON a Go type accepts, for error messages.
func describe(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Pointer:
		return describe(t.Elem()) + " or null"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "an integer"
	case reflect.Uint32:
		return "an integer from 0 to 4294967295"
	case reflect.Uint, reflect.Uint64, reflect.Uint16, reflect.Uint8:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	default:
		return t.String()
	}
}

// jsonNames lists the json names of the fields of struct type t, in order.
func jsonNames(t reflect.Type) []string {
	names := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		switch {
		case name == "-" || !f.IsExported():
		case name == "":
			names = append(names, f.Name)
		default:
			names = append(names, name)
		}
	}
	return names
}

// Clip shortens a client-supplied string for an error message: at most 64
// bytes, on a rune boundary, with "…" when cut.
func Clip(s string) string { return clip.Cut(s, 64) }
