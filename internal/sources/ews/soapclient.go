package ews

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/ntlm"
	"github.com/pushproxy/pushproxy/internal/sources"
)

// soapClient posts EWS SOAP requests for the Counter and the Manager:
// Basic (or NTLM, by its client's transport) or OAuth app-only
// credentials, ExchangeImpersonation of the
// mailbox, and the server's back-off. A busy answer (ErrorServerBusy, a
// bare 429 or 503) holds every request of the client for the wait the
// server asks for: the server throttles the account, not one mailbox.
type soapClient struct {
	url         string
	tokens      TokenSource
	username    string
	password    string
	impersonate bool
	client      *http.Client
	// maxAttempts, retryWait and maxRetryWait bound the retries after
	// busy answers.
	maxAttempts  int
	retryWait    time.Duration
	maxRetryWait time.Duration
	sleep        func(ctx context.Context, d time.Duration) error
	now          func() time.Time
	log          zerolog.Logger
	// who names the client in the debug line of a busy answer, e.g. "the
	// unread counter".
	who string
	// busy counts the busy answers; nil counts nothing.
	busy prometheus.Counter
	// gate, when set, is waited for before each request (a rate limit).
	gate func(ctx context.Context) error
	// finish, when positive, lets a request that was sent finish even
	// when its context ends, within that long: the server may act on it,
	// and its answer must be kept. Waits still end with the context.
	finish time.Duration

	// mu guards pausedUntil, the end of the last back-off the server
	// asked for.
	mu          sync.Mutex
	pausedUntil time.Time
}

// checkAccess checks how a client reaches EWS: an http(s) endpoint, and
// OAuth tokens or a username and password (sent with Basic, or answering
// NTLM challenges when useNTLM is set).
func checkAccess(endpoint string, tokens TokenSource, username, password string, useNTLM bool) error {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("URL %q is not an http(s) URL", endpoint)
	}
	switch {
	case tokens != nil && username != "":
		return errors.New("give OAuth tokens or a username, not both")
	case tokens == nil && (username == "" || password == ""):
		return errors.New("OAuth tokens or a username and password are required")
	case tokens != nil && useNTLM:
		return errors.New("NTLM authenticates a username and password, not OAuth tokens")
	}
	return nil
}

// authClient returns client as it must be for the credentials: with
// NTLM, a copy that answers the server's NTLM challenges over sessions
// connections at once.
func authClient(client *http.Client, useNTLM bool, sessions int) (*http.Client, error) {
	if !useNTLM {
		return client, nil
	}
	return ntlm.Client(client, sessions)
}

// checkTenants normalises and checks a list of tenant domains.
func checkTenants(list []string) ([]string, error) {
	var out []string
	for _, t := range list {
		t = normalTenant(t)
		if err := events.ValidateTenant(t); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// soapStatus is what the retry loop reads of a decoded answer.
type soapStatus struct {
	class   string
	code    string
	text    string
	backOff time.Duration
}

// busy reports whether the answer is EWS throttling.
func (s soapStatus) busy() bool { return s.class == ClassError && s.code == CodeServerBusy }

// soapAnswer is a decoded EWS answer: a response message or a fault.
type soapAnswer interface {
	soapStatus() soapStatus
}

// roundTrip posts body, a SOAP envelope with SOAPAction action, on behalf
// of mailbox, and decodes the answer. While the server is busy it waits
// the back-off the server asks for (BackOffMilliseconds, else
// Retry-After, else retryWait doubling) and asks again, up to
// maxAttempts; a wait longer than maxRetryWait, or than ctx has left,
// fails at once with ErrServerBusy. A 401 gets a new token once, when the
// token source can forget one. The answer is returned with its HTTP
// status whatever its response class, unless it is busy; an answer that
// decode cannot read is an error.
func roundTrip[A soapAnswer](ctx context.Context, c *soapClient, action, mailbox string, body []byte, decode func([]byte) (A, error)) (A, int, error) {
	var zero A
	reauthorized := false
	for attempt := 1; ; attempt++ {
		if err := c.pause(ctx); err != nil {
			return zero, 0, err
		}
		if c.gate != nil {
			if err := c.gate(ctx); err != nil {
				return zero, 0, err
			}
		}
		ans, err := c.sendFinishing(ctx, action, mailbox, body)
		if err != nil {
			return zero, 0, err
		}
		a, decodeErr := decode(ans.body)
		var st soapStatus
		if decodeErr == nil {
			st = a.soapStatus()
		}
		switch {
		case decodeErr == nil && !st.busy():
			return a, ans.status, nil
		case decodeErr == nil, ans.status == http.StatusServiceUnavailable || ans.status == http.StatusTooManyRequests:
			busy := busyError(ans.status, st, decodeErr == nil)
			if c.busy != nil {
				c.busy.Inc()
			}
			if attempt >= c.maxAttempts {
				return zero, ans.status, fmt.Errorf("%w after %d attempts: %w", ErrServerBusy, attempt, busy)
			}
			wait := c.backOff(st.backOff, ans.header, attempt)
			c.log.Debug().Str("code", busy.Code).Dur("wait", wait).Int("attempt", attempt).Msg("EWS is busy: " + c.who + " waits")
			if wait > c.maxRetryWait {
				return zero, ans.status, fmt.Errorf("%w: the server asks to wait %s (at most %s): %w", ErrServerBusy, wait, c.maxRetryWait, busy)
			}
			c.pauseFor(wait)
		case ans.status == http.StatusUnauthorized && !reauthorized && c.canForget():
			// The token may have been revoked before it expired: ask for
			// a new one, once.
			sources.Forget(c.tokens, ans.token)
			reauthorized = true
			attempt--
		case ans.status == http.StatusOK:
			return zero, ans.status, decodeErr
		default:
			return zero, ans.status, fmt.Errorf("the EWS server answered HTTP %d without a SOAP answer", ans.status)
		}
	}
}

// busyError describes a busy answer: the decoded one, or a bare 429 or
// 503.
func busyError(status int, st soapStatus, decoded bool) *ResponseError {
	if !decoded {
		return &ResponseError{HTTPStatus: status, Code: "HTTP" + strconv.Itoa(status), Message: http.StatusText(status)}
	}
	return &ResponseError{HTTPStatus: status, Code: st.code, Message: st.text}
}

// backOff is the wait a busy answer asks for: asked (its
// BackOffMilliseconds), else Retry-After seconds, else retryWait doubled
// for each attempt so far.
func (c *soapClient) backOff(asked time.Duration, header http.Header, attempt int) time.Duration {
	if asked > 0 {
		return asked
	}
	if secs, err := strconv.ParseUint(strings.TrimSpace(header.Get("Retry-After")), 10, 32); err == nil {
		return time.Duration(secs) * time.Second
	}
	d := c.retryWait
	for i := 1; i < attempt && d < c.maxRetryWait; i++ {
		d *= 2
	}
	return min(d, c.maxRetryWait)
}

// pauseFor makes every request of the client wait d from now.
func (c *soapClient) pauseFor(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if until := c.now().Add(d); until.After(c.pausedUntil) {
		c.pausedUntil = until
	}
}

// pause waits for the end of the server's last back-off, unless ctx ends
// first or has too little time left.
func (c *soapClient) pause(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	d := c.pausedUntil.Sub(c.now())
	c.mu.Unlock()
	if d <= 0 {
		return nil
	}
	if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < d {
		return fmt.Errorf("%w: the server asks to wait %s, past the deadline", ErrServerBusy, d)
	}
	return c.sleep(ctx, d)
}

// httpAnswer is the server's answer to one request.
type httpAnswer struct {
	status int
	header http.Header
	body   []byte
	// token is the access token the request carried, if any.
	token string
}

// sendFinishing is send, on a context that outlives ctx by finish when
// finish is set.
func (c *soapClient) sendFinishing(ctx context.Context, action, mailbox string, body []byte) (httpAnswer, error) {
	if c.finish <= 0 {
		return c.send(ctx, action, mailbox, body)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.finish)
	defer cancel()
	return c.send(ctx, action, mailbox, body)
}

// send posts one request and reads the answer, up to MaxAnswer bytes.
func (c *soapClient) send(ctx context.Context, action, mailbox string, body []byte) (httpAnswer, error) {
	name := action[strings.LastIndexByte(action, '/')+1:]
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return httpAnswer{}, fmt.Errorf("making a %s request: %w", name, err)
	}
	req.Header.Set("Content-Type", ContentType)
	req.Header.Set("Accept", "text/xml")
	req.Header.Set("SOAPAction", `"`+action+`"`)
	var token string
	if c.tokens != nil {
		if token, err = c.tokens.Token(ctx); err != nil {
			return httpAnswer{}, fmt.Errorf("getting an EWS token: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
	} else {
		req.SetBasicAuth(c.username, c.password)
	}
	if c.impersonate {
		// Exchange Online routes an impersonating request to the
		// mailbox's server by this header.
		req.Header.Set("X-AnchorMailbox", mailbox)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return httpAnswer{}, fmt.Errorf("sending a %s request: %w", name, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswer+1))
	if err != nil {
		return httpAnswer{}, fmt.Errorf("reading a %s answer: %w", name, err)
	}
	if len(data) > MaxAnswer {
		return httpAnswer{}, fmt.Errorf("reading a %s answer: longer than %d bytes", name, MaxAnswer)
	}
	return httpAnswer{status: resp.StatusCode, header: resp.Header, body: data, token: token}, nil
}

// canForget reports whether the token source can drop a refused token.
func (c *soapClient) canForget() bool { return sources.CanForget(c.tokens) }

// writeEnvelopeStart writes the XML declaration, the envelope's start and
// its header up to the start of the body: RequestServerVersion and, when
// impersonate is set, an ExchangeImpersonation acting as mailbox
// (ConnectingSID/PrimarySmtpAddress), which app-only tokens and service
// accounts with the ApplicationImpersonation role need.
func writeEnvelopeStart(b *bytes.Buffer, mailbox string, impersonate bool) {
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?>` + "\n")
	b.WriteString(`<soap:Envelope xmlns:soap="` + SOAPNamespace + `" xmlns:t="` + TypesNamespace + `" xmlns:m="` + MessagesNamespace + `">` + "\n")
	b.WriteString("  <soap:Header>\n")
	b.WriteString(`    <t:RequestServerVersion Version="` + RequestServerVersion + `"/>` + "\n")
	if impersonate {
		b.WriteString("    <t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>")
		writeText(b, mailbox)
		b.WriteString("</t:PrimarySmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>\n")
	}
	b.WriteString("  </soap:Header>\n")
	b.WriteString("  <soap:Body>\n")
}

// writeEnvelopeEnd closes what writeEnvelopeStart opened.
func writeEnvelopeEnd(b *bytes.Buffer) {
	b.WriteString("  </soap:Body>\n")
	b.WriteString("</soap:Envelope>\n")
}

// writeText writes s as XML character data.
func writeText(b *bytes.Buffer, s string) { _ = xml.EscapeText(b, []byte(s)) }
