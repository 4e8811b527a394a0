package dovecot

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pushproxy/pushproxy/internal/sources"
	"github.com/pushproxy/pushproxy/internal/testfs"
)

// fakeDoveadm speaks the doveadm HTTP API for the mailboxes in unseen
// ("user/mailbox" → count): users it has no mailbox of are unknown (exit
// code 67), unknown mailboxes of known users are not found (68). answer,
// when set, replaces the whole answer body.
type fakeDoveadm struct {
	t        *testing.T
	auth     string
	unseen   map[string]string
	answer   string
	requests atomic.Int32
	commands atomic.Int32
}

func (f *fakeDoveadm) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	if r.Method != http.MethodPost || r.URL.Path != "/doveadm/v1" {
		http.Error(w, "wrong method or path", http.StatusNotFound)
		return
	}
	if r.Header.Get("Authorization") != f.auth {
		w.Header().Add("WWW-Authenticate", "X-Dovecot-API")
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		f.t.Errorf("Content-Type %q", ct)
	}
	var commands [][3]json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&commands); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.commands.Add(int32(len(commands)))
	if f.answer != "" {
		fmt.Fprint(w, f.answer)
		return
	}
	tags := map[string]bool{}
	var answers []any
	for _, c := range commands {
		var name, tag string
		var params mailboxStatusParams
		if json.Unmarshal(c[0], &name) != nil || json.Unmarshal(c[1], &params) != nil || json.Unmarshal(c[2], &tag) != nil {
			http.Error(w, "bad command", http.StatusBadRequest)
			return
		}
		if name != "mailboxStatus" || fmt.Sprint(params.Field) != "[unseen]" || len(params.MailboxMask) != 1 || tags[tag] {
			f.t.Errorf("command %s %+v tag %q (repeated %v)", name, params, tag, tags[tag])
		}
		tags[tag] = true
		known := false
		for key := range f.unseen {
			known = known || strings.HasPrefix(key, params.User+"/")
		}
		count, ok := f.unseen[params.User+"/"+params.MailboxMask[0]]
		switch {
		case !known:
			answers = append(answers, []any{"error", map[string]any{"type": "exitCode", "exitCode": 67}, tag})
		case !ok:
			answers = append(answers, []any{"error", map[string]any{"type": "exitCode", "exitCode": 68}, tag})
		default:
			answers = append(answers, []any{"doveadmResponse", []map[string]string{{"mailbox": params.MailboxMask[0], "unseen": count}}, tag})
		}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(answers)
}

const testAPIKey = "the-api-key"

func apiKeyAuth() string {
	return "X-Dovecot-API " + base64.StdEncoding.EncodeToString([]byte(testAPIKey))
}

// describe writes a count as "n" or "error: <kind>" for comparison.
func describe(c sources.Count) string {
	var de *DoveadmError
	switch {
	case c.Err == nil:
		return fmt.Sprint(c.Unread)
	case c.Err == sources.ErrNotServed:
		return "not served"
	case errors.Is(c.Err, context.Canceled):
		return "canceled"
	case errors.As(c.Err, &de):
		return fmt.Sprintf("doveadm %d", de.ExitCode)
	default:
		return "error"
	}
}

func TestDoveadmCounts(t *testing.T) {
	alice := sources.Mailbox{Tenant: "example.com", User: "alice@example.com", Name: "INBOX"}
	bob := sources.Mailbox{Tenant: "example.com", User: "bob@example.com", Name: "INBOX"}
	aliceArchive := sources.Mailbox{Tenant: "example.com", User: "alice@example.com", Name: "Archive"}
	aliceMissing := sources.Mailbox{Tenant: "example.com", User: "alice@example.com", Name: "Nope"}
	other := sources.Mailbox{Tenant: "other.org", User: "carol@other.org", Name: "INBOX"}
	unseen := map[string]string{"alice@example.com/INBOX": "3", "alice@example.com/Archive": "0", "carol@other.org/INBOX": "1"}
	cases := []struct {
		name         string
		cfg          DoveadmConfig
		serverAuth   string
		answer       string
		boxes        []sources.Mailbox
		want         []string
		wantCommands int32
	}{
		{name: "mixed answers with an API key", cfg: DoveadmConfig{APIKey: testAPIKey}, serverAuth: apiKeyAuth(),
			boxes:        []sources.Mailbox{alice, bob, aliceArchive, aliceMissing, other},
			want:         []string{"3", "not served", "0", "doveadm 68", "1"},
			wantCommands: 5},
		{name: "basic auth", cfg: DoveadmConfig{Password: "pw"},
			serverAuth: "Basic " + base64.StdEncoding.EncodeToString([]byte("doveadm:pw")),
			boxes:      []sources.Mailbox{alice}, want: []string{"3"}, wantCommands: 1},
		{name: "tenants outside the list are not asked for", cfg: DoveadmConfig{APIKey: testAPIKey, Tenants: []string{"Example.com"}},
			serverAuth: apiKeyAuth(), boxes: []sources.Mailbox{other, alice},
			want: []string{"not served", "3"}, wantCommands: 1},
		{name: "wrong key", cfg: DoveadmConfig{APIKey: "wrong"}, serverAuth: apiKeyAuth(),
			boxes: []sources.Mailbox{alice, bob}, want: []string{"error", "error"}},
		{name: "malformed JSON", cfg: DoveadmConfig{APIKey: testAPIKey}, serverAuth: apiKeyAuth(),
			answer: `[["doveadmResponse",[{"mailbox":"INBOX","unseen":"3"}],"c0"],["err`, boxes: []sources.Mailbox{alice, bob},
			want: []string{"3", "error"}, wantCommands: 2},
		{name: "Dovecot's missing comma keeps the answers before it", cfg: DoveadmConfig{APIKey: testAPIKey}, serverAuth: apiKeyAuth(),
			answer: `[["doveadmResponse",[{"mailbox":"INBOX","unseen":"3"}],"c0"]["error",{"type":"exitCode", "exitCode":67},"c1"]]`,
			boxes:  []sources.Mailbox{alice, bob}, want: []string{"3", "error"}, wantCommands: 2},
		{name: "not JSON at all", cfg: DoveadmConfig{APIKey: testAPIKey}, serverAuth: apiKeyAuth(),
			answer: "Command ID must be a string", boxes: []sources.Mailbox{alice}, want: []string{"error"}, wantCommands: 1},
		{name: "a tag left unanswered", cfg: DoveadmConfig{APIKey: testAPIKey}, serverAuth: apiKeyAuth(),
			answer: `[["doveadmResponse",[{"mailbox":"INBOX","unseen":"3"}],"c1"]]`, boxes: []sources.Mailbox{bob, alice},
			want: []string{"error", "3"}, wantCommands: 2},
		{name: "wrong shapes", cfg: DoveadmConfig{APIKey: testAPIKey}, serverAuth: apiKeyAuth(),
			answer: `[{"x":1},["doveadmResponse",{"unseen":"1"},"c0"],["doveadmResponse",[{"mailbox":"INBOX","unseen":"-1"}],"c1"],["what",[],"c2"],["doveadmResponse",[{"mailbox":"INBOX","unseen":7}],"c3"]]`,
			boxes:  []sources.Mailbox{alice, alice, alice, alice}, want: []string{"error", "error", "error", "7"}, wantCommands: 4},
		{name: "no mailbox to ask for", cfg: DoveadmConfig{APIKey: testAPIKey}, serverAuth: apiKeyAuth(),
			boxes: []sources.Mailbox{{Tenant: "example.com", User: "alice@example.com", Name: "*"}, {Tenant: "example.com", Name: "INBOX"}},
			want:  []string{"error", "error"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeDoveadm{t: t, auth: tc.serverAuth, unseen: unseen, answer: tc.answer}
			srv := httptest.NewServer(fake)
			defer srv.Close()
			tc.cfg.URL = srv.URL
			d, err := NewDoveadm(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			counts := d.Counts(context.Background(), tc.boxes)
			var got []string
			for _, c := range counts {
				got = append(got, describe(c))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("counts %v, want %v (%v)", got, tc.want, counts)
			}
			if n := fake.commands.Load(); n != tc.wantCommands {
				t.Errorf("%d commands sent, want %d", n, tc.wantCommands)
			}
			if n := fake.requests.Load(); n > 1 {
				t.Errorf("%d requests for one Counts call, want at most 1", n)
			}
		})
	}
}

func TestDoveadmCanceled(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	d, err := NewDoveadm(DoveadmConfig{URL: srv.URL, APIKey: testAPIKey})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go cancel()
	boxes := []sources.Mailbox{{Tenant: "example.com", User: "a@example.com", Name: "INBOX"}, {Tenant: "example.com", User: "b@example.com", Name: "INBOX"}}
	for i, c := range d.Counts(ctx, boxes) {
		if !errors.Is(c.Err, context.Canceled) {
			t.Errorf("count %d: %v, want context.Canceled", i, c.Err)
		}
	}
}

func TestDoveadmAnswerTooLarge(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `[["doveadmResponse",[`)
		for range maxDoveadmAnswer / 20 {
			fmt.Fprint(w, `{"mailbox":"X","unseen":"1"},`)
		}
		fmt.Fprint(w, `{"mailbox":"INBOX","unseen":"1"}],"c0"]]`)
	}))
	defer srv.Close()
	d, err := NewDoveadm(DoveadmConfig{URL: srv.URL, APIKey: testAPIKey})
	if err != nil {
		t.Fatal(err)
	}
	c := d.Counts(context.Background(), []sources.Mailbox{{User: "a@example.com", Name: "INBOX"}})
	if c[0].Err == nil || !strings.Contains(c[0].Err.Error(), "larger than") {
		t.Fatalf("count %+v, want an error about the size", c[0])
	}
}

func TestNewDoveadm(t *testing.T) {
	cases := []struct {
		name         string
		cfg          DoveadmConfig
		wantErr      bool
		wantEndpoint string
	}{
		{"base URL", DoveadmConfig{URL: "http://127.0.0.1:8080", APIKey: "k"}, false, "http://127.0.0.1:8080/doveadm/v1"},
		{"full URL", DoveadmConfig{URL: "https://dc.example.com/doveadm/v1/", Password: "p"}, false, "https://dc.example.com/doveadm/v1"},
		{"prefix", DoveadmConfig{URL: "https://dc.example.com/mail", Password: "p"}, false, "https://dc.example.com/mail/doveadm/v1"},
		{"no secret", DoveadmConfig{URL: "http://127.0.0.1:8080"}, true, ""},
		{"two secrets", DoveadmConfig{URL: "http://127.0.0.1:8080", APIKey: "k", Password: "p"}, true, ""},
		{"no URL", DoveadmConfig{APIKey: "k"}, true, ""},
		{"other scheme", DoveadmConfig{URL: "ftp://h", APIKey: "k"}, true, ""},
		{"password in URL", DoveadmConfig{URL: "http://doveadm:p@h", APIKey: "k"}, true, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := NewDoveadm(tc.cfg)
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want error %v", err, tc.wantErr)
			}
			if err == nil && d.endpoint != tc.wantEndpoint {
				t.Errorf("endpoint %q, want %q", d.endpoint, tc.wantEndpoint)
			}
			if err == nil && d.Name() != "doveadm" {
				t.Errorf("name %q", d.Name())
			}
		})
	}
}

func TestDoveadmFlags(t *testing.T) {
	dir := t.TempDir()
	keyFile := testfs.Write(t, dir, "key", testAPIKey+"\n")
	emptyFile := testfs.Write(t, dir, "empty", "")
	cases := []struct {
		name        string
		args        []string
		wantEnabled bool
		wantErr     bool
		wantAuth    string
		wantTenants int
	}{
		{"disabled", nil, false, true, "", 0},
		{"API key", []string{"--doveadm-url=http://127.0.0.1:8080", "--doveadm-api-key-file=" + keyFile, "--doveadm-tenants=a.com, b.com"}, true, false, apiKeyAuth(), 2},
		{"password", []string{"--doveadm-url=http://127.0.0.1:8080", "--doveadm-password-file=" + keyFile}, true, false,
			"Basic " + base64.StdEncoding.EncodeToString([]byte("doveadm:"+testAPIKey)), 0},
		{"both", []string{"--doveadm-url=http://h", "--doveadm-password-file=" + keyFile, "--doveadm-api-key-file=" + keyFile}, true, true, "", 0},
		{"neither", []string{"--doveadm-url=http://h"}, true, true, "", 0},
		{"missing file", []string{"--doveadm-url=http://h", "--doveadm-api-key-file=" + filepath.Join(dir, "nope")}, true, true, "", 0},
		{"empty file", []string{"--doveadm-url=http://h", "--doveadm-api-key-file=" + emptyFile}, true, true, "", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			s := DoveadmFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if s.Enabled() != tc.wantEnabled {
				t.Errorf("enabled %v", s.Enabled())
			}
			d, err := s.Counter()
			if (err != nil) != tc.wantErr {
				t.Fatalf("error %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if d.auth != tc.wantAuth || len(d.tenants) != tc.wantTenants {
				t.Errorf("auth %q tenants %v", d.auth, d.tenants)
			}
		})
	}
}
