package tokens

import (
	"errors"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/clip"
)

// FuzzTokenResponse feeds arbitrary answers to ParseTokenResponse. Seeds:
// testdata/fuzz/FuzzTokenResponse (an Entra token, an Entra error, v1
// string lifetimes, HTML).
func FuzzTokenResponse(f *testing.F) {
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		token, lifetime, err := ParseTokenResponse(status, body)
		var te *TokenError
		switch {
		case err == nil:
			if status != 200 || token == "" || !isToken68(token) || lifetime < 0 {
				t.Fatalf("accepted %d: token %q lifetime %v", status, token, lifetime)
			}
		case errors.As(err, &te):
			if status == 200 || te.Status != status || strings.ContainsAny(err.Error(), "\r\n") || len(te.Description) > clip.MaxText+len("…") {
				t.Fatalf("token error %q for status %d", err, status)
			}
		case token != "" || lifetime != 0:
			t.Fatalf("error %v with token %q", err, token)
		}
	})
}
