// Package ntlm authenticates HTTP requests with NTLM, for mail servers
// (Exchange's EWS on premises) whose operators allow nothing else.
//
// The protocol work (negotiate, challenge, NTLMv2 authenticate) is
// go-ntlmssp's Negotiator. What this package adds is what NTLM asks of
// the transport: NTLM authenticates a TCP connection, not a request, so
// the negotiate and authenticate messages of one handshake must travel on
// the same connection, and an authenticated connection should be used
// again rather than shaken hands with anew. A Transport therefore holds a
// few sessions, each with its own connection pool and one request at a
// time; requests share the sessions, so they may run concurrently without
// one handshake's second message taking another's connection.
package ntlm

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/Azure/go-ntlmssp"
)

// Transport is an http.RoundTripper that answers a server's NTLM (or
// Negotiate) challenge with the Basic credentials set on the request
// (http.Request.SetBasicAuth). The credentials never leave in the clear:
// a server asking for Basic gets the request without them. The user name
// is "DOMAIN\user" or a user principal name ("user@domain").
//
// A response holds its session until its body is closed; a caller that
// never closes bodies runs out of sessions.
type Transport struct {
	sessions chan http.RoundTripper
}

// NewTransport makes a Transport of sessions sessions (at least one),
// each sending over its own clone of base with HTTP/2 turned off: NTLM
// over HTTP needs HTTP/1.1 connections. base is http.DefaultTransport
// when nil.
func NewTransport(base *http.Transport, sessions int) *Transport {
	if base == nil {
		base = http.DefaultTransport.(*http.Transport)
	}
	t := &Transport{sessions: make(chan http.RoundTripper, max(sessions, 1))}
	for range cap(t.sessions) {
		conns := base.Clone()
		var http1 http.Protocols
		http1.SetHTTP1(true)
		conns.Protocols = &http1
		// Two idle connections: the one a handshake authenticated and
		// the one whose anonymous attempt was refused.
		conns.MaxIdleConnsPerHost = 2
		t.sessions <- ntlmssp.Negotiator{RoundTripper: conns}
	}
	return t
}

// RoundTrip sends req on a free session, waiting for one until req's
// context ends.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var session http.RoundTripper
	select {
	case session = <-t.sessions:
	case <-req.Context().Done():
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, fmt.Errorf("waiting for a free NTLM session: %w", req.Context().Err())
	}
	resp, err := session.RoundTrip(req)
	if err != nil {
		t.sessions <- session
		return nil, err
	}
	resp.Body = &releasingBody{ReadCloser: resp.Body, release: func() { t.sessions <- session }}
	return resp, nil
}

// releasingBody gives its session back when it is closed, once.
type releasingBody struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

// Close closes the body and gives the session back.
func (b *releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}

// Client returns a copy of client whose requests authenticate with NTLM
// over sessions sessions. Its transport must be an *http.Transport (or
// nil, the default one).
func Client(client *http.Client, sessions int) (*http.Client, error) {
	if client == nil {
		client = &http.Client{}
	}
	var base *http.Transport
	switch rt := client.Transport.(type) {
	case nil:
	case *http.Transport:
		base = rt
	default:
		return nil, errors.New("NTLM needs the client's transport to be an *http.Transport")
	}
	c := *client
	c.Transport = NewTransport(base, sessions)
	return &c, nil
}
