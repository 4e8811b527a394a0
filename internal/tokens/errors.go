package tokens

import "errors"

// ErrRejected is matched by every error that means the request's credentials
// are not acceptable: a missing, malformed, unverifiable or invalid token.
// The relay answers such an error with 401 and a [Challenge]; any other error
// from [Verifier.Verify] (for instance a failing [PartnerSource]) is the
// relay's own fault and not a reason to blame the caller.
var ErrRejected = errors.New("credentials rejected")

// rejection is the type of the token rejection sentinels: each one is itself
// and also matches ErrRejected.
type rejection struct{ msg string }

func (e *rejection) Error() string { return e.msg }

// Is reports whether target is the ErrRejected umbrella.
func (e *rejection) Is(target error) bool { return target == ErrRejected }

// Token rejections. Each matches itself and [ErrRejected] with errors.Is.
var (
	// ErrMissingToken means no bearer token was presented.
	ErrMissingToken error = &rejection{"no bearer token presented"}
	// ErrTokenTooLarge means the token is longer than the verifier accepts.
	ErrTokenTooLarge error = &rejection{"token too large"}
	// ErrMalformedToken means the token is not a well-formed JWT of the
	// expected shape (segments, base64url, JSON, required claims).
	ErrMalformedToken error = &rejection{"malformed token"}
	// ErrUnsupportedAlgorithm means the token is not signed with RS256.
	ErrUnsupportedAlgorithm error = &rejection{"unsupported token signing algorithm"}
	// ErrUnknownKey means the token's x5t names no registered certificate.
	ErrUnknownKey error = &rejection{"token signed with an unregistered certificate"}
	// ErrKeyNotActive means the token's certificate is registered but the
	// current time is outside its registration window.
	ErrKeyNotActive error = &rejection{"token signed with a certificate outside its registration window"}
	// ErrBadSignature means the signature does not verify with the
	// certificate named by x5t.
	ErrBadSignature error = &rejection{"token signature does not verify"}
	// ErrExpired means the token's exp (plus clock skew) has passed.
	ErrExpired error = &rejection{"token expired"}
	// ErrNotYetValid means the token's nbf (minus clock skew) is still ahead.
	ErrNotYetValid error = &rejection{"token not yet valid"}
	// ErrLifetimeTooLong means exp - nbf exceeds the verifier's maximum.
	ErrLifetimeTooLong error = &rejection{"token lifetime exceeds the allowed maximum"}
	// ErrWrongAudience means aud does not name this relay.
	ErrWrongAudience error = &rejection{"token audience is not this relay"}
	// ErrWrongIssuer means iss or nameid do not match the partner that
	// registered the signing certificate.
	ErrWrongIssuer error = &rejection{"token issuer does not match the registered partner"}
	// ErrNotTrustedForDelegation means the trustedfordelegation claim is
	// not "true": the token is not an actor token of the partner.
	ErrNotTrustedForDelegation error = &rejection{"token is not trusted for delegation"}
)

// Certificate, registration and metadata errors.
var (
	// ErrKeyTooSmall means an RSA key is shorter than MinKeyBits.
	ErrKeyTooSmall = errors.New("RSA key smaller than 2048 bits")
	// ErrNotRSA means a certificate's or key's algorithm is not RSA.
	ErrNotRSA = errors.New("key is not RSA")
	// ErrKeyMismatch means a private key does not belong to the certificate.
	ErrKeyMismatch = errors.New("private key does not match the certificate")
	// ErrNoPrivateKey means a private key is needed but only the public
	// certificate is loaded.
	ErrNoPrivateKey = errors.New("certificate has no private key")
	// ErrCertificateExpired means the signing certificate is outside its
	// own validity period, so no partner would accept its tokens.
	ErrCertificateExpired = errors.New("signing certificate is not valid at this time")
	// ErrDuplicateCertificate means a certificate is already registered for
	// another organisation.
	ErrDuplicateCertificate = errors.New("certificate already registered for another organization")
	// ErrBadMetadata means an auth metadata response is not a usable
	// metadata document (HTTP status, JSON, or content).
	ErrBadMetadata = errors.New("invalid auth metadata")
	// ErrMetadataTooLarge means an auth metadata response exceeds
	// MaxMetadataSize.
	ErrMetadataTooLarge = errors.New("auth metadata document too large")
)
