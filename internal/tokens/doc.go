// Package tokens implements server-to-server (S2S) OAuth between the
// on-premises dispatcher and the relay: the signing certificate, issuing
// tokens, verifying them, and the auth metadata document.
//
// # Certificate
//
// Each organisation signs with a self-signed RSA certificate (at least 2048
// bits, with a subject key identifier), the counterpart of Exchange's
// "Exchange S2S OAuth" certificate. It is known by its thumbprint, the SHA-1
// of the DER certificate printed as 40 upper-case hex characters (what
// Exchange shows as CurrentCertificateThumbprint). The relay registers the
// public part, exported as a DER .cer file, for the organisation, with the
// dates from which and until which it is accepted.
//
// # Token
//
// A token is a JWT signed with RS256 (RSASSA-PKCS1-v1_5 with SHA-256). Its
// header names the signing certificate by x5t, the base64url (unpadded)
// SHA-1 of the DER certificate:
//
//	{"alg":"RS256","typ":"JWT","x5t":"PfqkW31-QDOE41LD4qGBA6t3rCc"}
//
// Its claims follow Microsoft's high-trust (actor token) format:
//
//	{
//	  "aud": "<relay principal>/<relay host>@<realm>",
//	  "iss": "<issuer id>@<realm>",
//	  "nameid": "<issuer id>@<realm>",
//	  "trustedfordelegation": "true",
//	  "nbf": 1767225600,
//	  "exp": 1767229200
//	}
//
// nbf and exp are epoch seconds. An [Issuer] caches its token and signs a new
// one well before the cached one expires.
//
// # Verification
//
// A [Verifier] accepts only RS256. It looks the x5t up in a [PartnerSource]
// (for instance a [Registry]), which yields the partner organisation and its
// registered certificates; the token must be signed by one of them that is
// inside its registration window, so a next certificate can be registered
// ahead of a rotation and the old one stays accepted until its end date. It
// then checks the audience (this relay), the issuer (the partner's realm and,
// when registered, its issuer id), nameid = iss, and nbf/exp with a small
// clock skew. The tenant comes from the registration, never from the token
// alone. Rejections are errors matching [ErrRejected]; answer them with 401
// and a WWW-Authenticate value built by [Challenge].
//
// # Metadata
//
// [Metadata] is the JSON auth metadata document (issuer, realm, signing keys
// as base64 DER certificates, endpoints), built with [BuildMetadata], read
// from an AuthMetadataUrl with [FetchMetadata] or through a [MetadataCache].
package tokens
