package relayclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/pushproxy/pushproxy/internal/relayproto"
)

// Classify turns any error of a publish into one of the connectivity
// probe's classes (ClassAuthentication, ClassNetworking,
// ClassPushNotifications, ClassUnknown) and a message that tells the
// operator what is wrong and what to fix. Throttling and server failures of
// the relay are ClassUnknown for the probe: neither the network, nor the
// credentials, nor the configuration is at fault. A nil error gives ("", "").
func Classify(err error) (Class, string) {
	if err == nil {
		return "", ""
	}
	var e *Error
	if !errors.As(err, &e) {
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			return ClassNetworking, fmt.Sprintf("the push notification service did not answer in time: %v; check the relay is reachable from this host", err)
		case errors.Is(err, context.Canceled):
			return ClassUnknown, fmt.Sprintf("the request was cancelled before it completed: %v", err)
		}
		return ClassUnknown, fmt.Sprintf("an unknown error occurred: %v", err)
	}
	class := e.Class
	if class == ClassThrottled || class == ClassServer {
		class = ClassUnknown
	}
	if errors.Is(e.Err, ErrCircuitOpen) {
		return class, fmt.Sprintf("requests to the push notification service at %s are paused after repeated failures: %v; they resume by themselves once the relay answers again", e.URI, e.Err)
	}
	return class, e.explain()
}

// explain is the operator's message for e, by class.
func (e *Error) explain() string {
	switch e.Class {
	case ClassNetworking:
		return e.explainNetworking()
	case ClassAuthentication:
		return e.explainAuthentication()
	case ClassPushNotifications:
		return e.explainConfiguration()
	case ClassThrottled:
		return fmt.Sprintf("the push notification service at %s is throttling requests (%s); it asked to wait %s before retrying", e.URI, e.answer(), e.RetryAfter)
	case ClassServer:
		return fmt.Sprintf("the push notification service at %s failed (%s); check the relay's health and its logs%s", e.URI, e.answer(), e.forRequest())
	}
	return fmt.Sprintf("an unknown error occurred publishing to %s: %v", e.URI, e.cause())
}

func (e *Error) explainNetworking() string {
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalidCert x509.CertificateInvalidError
	switch {
	case errors.As(e.Err, &dnsErr) && dnsErr.IsNotFound:
		return fmt.Sprintf("a connection to the push notification service at %s could not be established: the host %q could not be found (%v); check the proxy Uri (pushctl proxy show) and this host's DNS", e.URI, dnsErr.Name, dnsErr)
	case errors.As(e.Err, &certErr), errors.As(e.Err, &unknownCA), errors.As(e.Err, &hostErr), errors.As(e.Err, &invalidCert):
		return fmt.Sprintf("a secure connection to the push notification service at %s could not be established: %v; check that the relay's TLS certificate is valid, matches the host name of the Uri, and is issued by an authority this host trusts", e.URI, e.cause())
	}
	return fmt.Sprintf("a connection to the push notification service at %s could not be established: %v; check that the relay is running and reachable from this host (DNS, firewall, HTTP proxy)", e.URI, e.cause())
}

func (e *Error) explainAuthentication() string {
	switch e.Status {
	case 0:
		return fmt.Sprintf("it was not possible to authenticate to %s: %v — check the S2S OAuth certificate and its private key are in place and valid (pushctl auth show)", e.URI, e.cause())
	case http.StatusForbidden:
		return fmt.Sprintf("the push notification service at %s accepted the credentials but refused access (%s) — check the organization is registered with the relay (pushctl relay partner list)%s", e.URI, e.answer(), e.forRequest())
	}
	what := e.answer()
	if e.Challenge != "" {
		what = e.Challenge
		if e.Fault != nil && e.Fault.Message != "" {
			what += " (" + e.Fault.Message + ")"
		}
	}
	return fmt.Sprintf("it was not possible to authenticate to %s: %s — check the certificate is registered with the relay (pushctl relay partner add), that the organization and realm match the challenge, and that the clocks of both sides agree", e.URI, what)
}

func (e *Error) explainConfiguration() string {
	switch {
	case errors.Is(e.Err, errInvalidURI):
		return fmt.Sprintf("the service URI %s is not valid: %v; set it with pushctl proxy enable --uri", e.URI, e.cause())
	case e.Status == http.StatusNotFound:
		return fmt.Sprintf("the service URI %s could not be found: POST %s answered %s; check the proxy Uri (pushctl proxy show) is the relay's PushNotifications address", e.URI, e.endpoint(), e.answer())
	case e.Status >= 300 && e.Status < 400:
		return fmt.Sprintf("the service URI %s redirects elsewhere (%s, %v); set the proxy Uri to the relay's own address (pushctl proxy enable --uri)", e.URI, e.answer(), e.cause())
	case errors.Is(e.Err, errBadResponse):
		return fmt.Sprintf("the service at %s did not answer like a push notification relay: %v; check the proxy Uri (pushctl proxy show) points at the relay", e.URI, e.cause())
	}
	return fmt.Sprintf("the push notification service at %s refused the request (%s); check the proxy configuration (pushctl proxy show) and the relay's logs%s", e.URI, e.answer(), e.forRequest())
}

// answer is the relay's answer: status and fault message.
func (e *Error) answer() string {
	if e.Status == 0 {
		return "no answer"
	}
	s := fmt.Sprintf("HTTP %d %s", e.Status, http.StatusText(e.Status))
	if e.Fault != nil && e.Fault.Message != "" {
		s += ": " + e.Fault.Message
	}
	return s
}

// cause is the underlying error, or the answer when there is none.
func (e *Error) cause() string {
	if e.Err == nil {
		return e.answer()
	}
	return e.Err.Error()
}

// forRequest names the request for the relay's logs.
func (e *Error) forRequest() string {
	if e.RequestID == "" {
		return ""
	}
	return " for client-request-id " + e.RequestID
}

// endpoint is the URL the request went to.
func (e *Error) endpoint() string {
	return strings.TrimRight(e.URI, "/") + relayproto.PublishPath
}
