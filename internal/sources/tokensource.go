package sources

import "context"

// TokenSource gives a mail system's client its OAuth access tokens;
// *tokens.AppTokenSource is one. A source that also has Forget(token) is
// told about a token the mail system refused, and the request is tried
// once more with a new one (see CanForget and Forget).
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// tokenForgetter is a TokenSource that can drop a refused token.
type tokenForgetter interface {
	Forget(token string)
}

// CanForget reports whether src can drop a refused token, so that a
// request refused for its token is worth one more try.
func CanForget(src TokenSource) bool {
	_, ok := src.(tokenForgetter)
	return ok
}

// Forget drops a token the mail system refused, when src can.
func Forget(src TokenSource, token string) {
	if f, ok := src.(tokenForgetter); ok {
		f.Forget(token)
	}
}
