// Package ntlmtest is an HTTP server that demands NTLM the way IIS does
// in front of Exchange, for tests: an anonymous request is refused with
// "WWW-Authenticate: NTLM", a negotiate message is answered with a
// challenge, the authenticate message's NTLMv2 response is checked
// against the server's accounts (MS-NLMP 3.3.2), and the connection stays
// authenticated until it closes. It refuses Basic credentials, NTLMv1
// responses and an authenticate message on a connection that was not
// challenged, and counts each, so that tests can see a client that sends
// a password in the clear or splits a handshake across connections.
package ntlmtest

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"

	//lint:ignore SA1019 NTLM's NT hash is MD4 by definition (MS-NLMP 3.3.1).
	"golang.org/x/crypto/md4"
)

// NetBIOS and DNS names the server gives in its challenge.
const (
	Domain    = "FABRIKAM"
	DNSDomain = "fabrikam.com"
	Computer  = "MAIL"
)

// Counts are what the server saw.
type Counts struct {
	// Handshakes counts the connections authenticated.
	Handshakes int
	// Refused counts authenticate messages with a wrong user or
	// password.
	Refused int
	// Basic counts requests that carried Basic credentials.
	Basic int
	// Unchallenged counts authenticate messages on a connection that
	// had no challenge: a handshake split across connections.
	Unchallenged int
	// NTLMv1 counts authenticate messages with an NTLMv1 response.
	NTLMv1 int
	// Connections counts the connections opened.
	Connections int
}

// Server is a running NTLM-protected server.
type Server struct {
	*httptest.Server
	accounts map[string]string
	next     http.Handler

	mu     sync.Mutex
	conns  map[string]*connState
	counts Counts
}

// connState is what the server knows of one connection.
type connState struct {
	challenge     []byte
	authenticated string
}

// NewServer starts a server that lets requests authenticated as one of
// accounts through to next; tb closes it. accounts maps a user, as
// "DOMAIN\user" or a user principal name, to its password; names are
// compared without regard to case, like Windows does.
func NewServer(tb testing.TB, accounts map[string]string, next http.Handler) *Server {
	tb.Helper()
	s := &Server{accounts: map[string]string{}, next: next, conns: map[string]*connState{}}
	for user, password := range accounts {
		s.accounts[strings.ToLower(user)] = password
	}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.Config.ConnState = s.connStateChanged
	s.Start()
	tb.Cleanup(s.Close)
	return s
}

// Counts returns what the server saw so far.
func (s *Server) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts
}

// connStateChanged keeps the state of open connections only.
func (s *Server) connStateChanged(c net.Conn, state http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch state {
	case http.StateNew:
		s.conns[c.RemoteAddr().String()] = &connState{}
		s.counts.Connections++
	case http.StateClosed, http.StateHijacked:
		delete(s.conns, c.RemoteAddr().String())
	}
}

// serve authenticates the request's connection, then lets next answer.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	user, challenge, err := s.authenticate(r)
	switch {
	case user != "":
		r.Header.Set("X-Authenticated-User", user)
		s.next.ServeHTTP(w, r)
	case challenge != nil:
		s.refuse(w, "NTLM "+base64.StdEncoding.EncodeToString(challenge))
	default:
		if err != nil {
			w.Header().Set("X-Refusal", err.Error())
		}
		s.refuse(w, "NTLM", "Negotiate")
	}
}

// refuse answers 401 with an HTML body, as IIS does.
func (s *Server) refuse(w http.ResponseWriter, challenges ...string) {
	for _, c := range challenges {
		w.Header().Add("WWW-Authenticate", c)
	}
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = io.WriteString(w, "<html><body><h1>401 - Unauthorized: Access is denied due to invalid credentials.</h1></body></html>\n")
}

// authenticate returns the user of an authenticated connection or
// request, or the challenge to answer a negotiate message with.
func (s *Server) authenticate(r *http.Request) (user string, challenge []byte, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	conn := s.conns[r.RemoteAddr]
	if conn == nil {
		return "", nil, errors.New("unknown connection")
	}
	if conn.authenticated != "" {
		return conn.authenticated, nil, nil
	}
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	switch strings.ToLower(scheme) {
	case "":
		return "", nil, nil
	case "basic":
		s.counts.Basic++
		return "", nil, errors.New("basic credentials are not accepted")
	case "ntlm", "negotiate":
	default:
		return "", nil, fmt.Errorf("scheme %q is not accepted", scheme)
	}
	msg, err := base64.StdEncoding.DecodeString(token)
	if err != nil || len(msg) < 12 || !bytes.Equal(msg[:8], []byte("NTLMSSP\x00")) {
		return "", nil, errors.New("not an NTLM message")
	}
	switch binary.LittleEndian.Uint32(msg[8:]) {
	case 1:
		conn.challenge = make([]byte, 8)
		_, _ = rand.Read(conn.challenge)
		return "", challengeMessage(conn.challenge), nil
	case 3:
		if conn.challenge == nil {
			s.counts.Unchallenged++
			return "", nil, errors.New("authenticate message on a connection that was not challenged")
		}
		user, err := s.check(msg, conn.challenge)
		conn.challenge = nil
		if err != nil {
			return "", nil, err
		}
		conn.authenticated = user
		s.counts.Handshakes++
		return user, nil, nil
	default:
		return "", nil, errors.New("unexpected NTLM message type")
	}
}

// check verifies an authenticate message's NTLMv2 response to challenge
// and returns its user as "DOMAIN\user" or the principal name.
func (s *Server) check(msg, challenge []byte) (string, error) {
	if len(msg) < 64 {
		return "", errors.New("authenticate message too short")
	}
	if binary.LittleEndian.Uint32(msg[60:])&flagUnicode == 0 {
		return "", errors.New("authenticate message not in Unicode")
	}
	nt, err1 := field(msg, 20)
	domainRaw, err2 := field(msg, 28)
	userRaw, err3 := field(msg, 36)
	if err := errors.Join(err1, err2, err3); err != nil {
		return "", err
	}
	if len(nt) <= 24 {
		s.counts.NTLMv1++
		return "", errors.New("NTLMv1 responses are not accepted")
	}
	user, domain := fromUnicode(userRaw), fromUnicode(domainRaw)
	name := user
	if domain != "" {
		name = domain + `\` + user
	}
	password, ok := s.accounts[strings.ToLower(name)]
	proof, blob := nt[:16], nt[16:]
	if !ok || blob[0] != 1 || blob[1] != 1 || !hmac.Equal(proof, ntProof(password, user, domain, challenge, blob)) {
		s.counts.Refused++
		return "", fmt.Errorf("wrong user or password for %q", name)
	}
	return name, nil
}

// ntProof is NTProofStr of MS-NLMP 3.3.2:
// HMAC_MD5(NTOWFv2(password, user, domain), challenge || blob).
func ntProof(password, user, domain string, challenge, blob []byte) []byte {
	h := md4.New()
	h.Write(toUnicode(password))
	key := hmacMD5(h.Sum(nil), toUnicode(strings.ToUpper(user)+domain))
	return hmacMD5(key, challenge, blob)
}

func hmacMD5(key []byte, data ...[]byte) []byte {
	m := hmac.New(md5.New, key)
	for _, d := range data {
		m.Write(d)
	}
	return m.Sum(nil)
}

// field reads the variable field whose length, maximum length and
// offset start at at.
func field(msg []byte, at int) ([]byte, error) {
	n := int(binary.LittleEndian.Uint16(msg[at:]))
	off := int(binary.LittleEndian.Uint32(msg[at+4:]))
	if off > len(msg) || n > len(msg)-off {
		return nil, errors.New("field out of the message")
	}
	return msg[off : off+n], nil
}

// Negotiate flags of the challenge (MS-NLMP 2.2.2.5): Unicode, target
// requested, NTLM, always sign, domain target, extended session security,
// target info, version, 128- and 56-bit; no key exchange.
const (
	flagUnicode    = 1 << 0
	challengeFlags = flagUnicode | 1<<2 | 1<<9 | 1<<15 | 1<<16 | 1<<19 | 1<<23 | 1<<25 | 1<<29 | 1<<31
)

// challengeMessage builds a CHALLENGE_MESSAGE (MS-NLMP 2.2.1.2) with the
// server's names and time in its target info.
func challengeMessage(challenge []byte) []byte {
	target := toUnicode(Domain)
	var info bytes.Buffer
	av := func(id uint16, value []byte) {
		_ = binary.Write(&info, binary.LittleEndian, id)
		_ = binary.Write(&info, binary.LittleEndian, uint16(len(value)))
		info.Write(value)
	}
	av(2, toUnicode(Domain))
	av(1, toUnicode(Computer))
	av(4, toUnicode(DNSDomain))
	av(3, toUnicode(strings.ToLower(Computer)+"."+DNSDomain))
	stamp := make([]byte, 8)
	binary.LittleEndian.PutUint64(stamp, uint64(time.Now().UnixNano()/100+116444736000000000))
	av(7, stamp)
	av(0, nil)

	const header = 56
	var m bytes.Buffer
	m.WriteString("NTLMSSP\x00")
	le := func(v any) { _ = binary.Write(&m, binary.LittleEndian, v) }
	le(uint32(2))
	le(uint16(len(target)))
	le(uint16(len(target)))
	le(uint32(header))
	le(uint32(challengeFlags))
	m.Write(challenge)
	m.Write(make([]byte, 8))
	le(uint16(info.Len()))
	le(uint16(info.Len()))
	le(uint32(header + len(target)))
	m.Write([]byte{10, 0, 0x63, 0x45, 0, 0, 0, 15}) // Windows 10.0.17763, NTLM revision 15
	m.Write(target)
	m.Write(info.Bytes())
	return m.Bytes()
}

func toUnicode(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

func fromUnicode(b []byte) string {
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u))
}
