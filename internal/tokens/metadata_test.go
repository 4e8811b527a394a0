package tokens

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

func testMetadata(t *testing.T) *Metadata {
	t.Helper()
	m, err := BuildMetadata(MetadataOptions{
		Name:             "pushproxy relay",
		IssuerID:         relayPrincipal,
		Realm:            fabrikamRealm,
		AllowedAudiences: []string{relayPrincipal + "/" + relayHost + "@" + fabrikamRealm},
		Certificates:     []*Certificate{loadTestCert(t, "s2s")},
		Endpoints: []MetadataEndpoint{
			{Location: "https://" + relayHost + "/metadata/json/1", Protocol: "OAuth2", Usage: "metadata"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestBuildMetadataGolden(t *testing.T) {
	got, err := json.MarshalIndent(testMetadata(t), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	golden := filepath.Join("testdata", "metadata.golden.json")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestBuildMetadataGolden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("metadata differs from %s:\n%s", golden, got)
	}

	// The field names are the ones peers read, independent of the golden file.
	var generic map[string]any
	if err := json.Unmarshal(got, &generic); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "version", "name", "realm", "issuer", "allowedAudiences", "keys", "endpoints"} {
		if _, ok := generic[k]; !ok {
			t.Errorf("metadata has no %q", k)
		}
	}
	key := generic["keys"].([]any)[0].(map[string]any)
	if key["usage"] != "signing" || key["keyinfo"].(map[string]any)["x5t"] != s2sX5T ||
		key["keyValue"].(map[string]any)["type"] != "x509Certificate" {
		t.Errorf("key = %v", key)
	}
}

func TestMetadataCertificates(t *testing.T) {
	m := testMetadata(t)
	certs, err := m.Certificates()
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 1 || certs[0].Thumbprint() != s2sThumbprint || certs[0].Key != nil {
		t.Fatalf("Certificates() = %v", certs)
	}

	contosoX5T := loadTestCert(t, "contoso").X5T()
	tests := []struct {
		name   string
		mutate func(*MetadataKey)
		count  int
		is     error
	}{
		{"x5t of another certificate", func(k *MetadataKey) { k.KeyInfo.X5T = contosoX5T }, 0, ErrBadMetadata},
		{"value not base64", func(k *MetadataKey) { k.KeyValue.Value = "%%%" }, 0, ErrBadMetadata},
		{"value not a certificate", func(k *MetadataKey) { k.KeyValue.Value = "AAAA" }, 0, ErrBadMetadata},
		{"no x5t", func(k *MetadataKey) { k.KeyInfo.X5T = "" }, 1, nil},
		{"encryption key skipped", func(k *MetadataKey) { k.Usage = "encryption" }, 0, nil},
		{"other key type skipped", func(k *MetadataKey) { k.KeyValue.Type = "jwk" }, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := testMetadata(t)
			tt.mutate(&m.Keys[0])
			certs, err := m.Certificates()
			if !errors.Is(err, tt.is) || (tt.is == nil && err != nil) {
				t.Fatalf("Certificates: %v, want %v", err, tt.is)
			}
			if len(certs) != tt.count {
				t.Errorf("got %d certificates, want %d", len(certs), tt.count)
			}
		})
	}
}

func TestBuildMetadataRefuses(t *testing.T) {
	tests := []struct {
		name string
		opts MetadataOptions
	}{
		{"no issuer id", MetadataOptions{Realm: fabrikamRealm}},
		{"no realm", MetadataOptions{IssuerID: relayPrincipal}},
		{"nil certificate", MetadataOptions{IssuerID: relayPrincipal, Realm: fabrikamRealm, Certificates: []*Certificate{nil}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := BuildMetadata(tt.opts); err == nil {
				t.Fatal("BuildMetadata succeeded")
			}
		})
	}
}

func TestFetchMetadata(t *testing.T) {
	good, err := json.Marshal(testMetadata(t))
	if err != nil {
		t.Fatal(err)
	}
	// Microsoft's documents spell the key value "keyvalue".
	lowercase := bytes.ReplaceAll(good, []byte(`"keyValue"`), []byte(`"keyvalue"`))
	serve := func(status int, body []byte) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = w.Write(body)
		}
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
		is      error // nil: success expected
	}{
		{"document", serve(http.StatusOK, good), nil},
		{"document with lower-case keyvalue", serve(http.StatusOK, lowercase), nil},
		{"exactly the size limit", serve(http.StatusOK, append(good, bytes.Repeat([]byte(" "), MaxMetadataSize-len(good))...)), nil},
		{"one byte over the size limit", serve(http.StatusOK, append(good, bytes.Repeat([]byte(" "), MaxMetadataSize-len(good)+1)...)), ErrMetadataTooLarge},
		{"not JSON", serve(http.StatusOK, []byte("<html>hello</html>")), ErrBadMetadata},
		{"no issuer", serve(http.StatusOK, []byte(`{"realm":"x"}`)), ErrBadMetadata},
		{"broken key", serve(http.StatusOK, bytes.Replace(good, []byte(`"value":"MII`), []byte(`"value":"XII`), 1)), ErrBadMetadata},
		{"not found", serve(http.StatusNotFound, []byte("no")), ErrBadMetadata},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			m, err := FetchMetadata(context.Background(), srv.Client(), srv.URL+"/metadata/json/1")
			if tt.is != nil {
				if !errors.Is(err, tt.is) {
					t.Fatalf("FetchMetadata: %v, want %v", err, tt.is)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			certs, err := m.Certificates()
			if err != nil || len(certs) != 1 || certs[0].Thumbprint() != s2sThumbprint {
				t.Errorf("fetched certificates %v, %v", certs, err)
			}
		})
	}
}

func TestFetchMetadataTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := FetchMetadata(ctx, srv.Client(), srv.URL)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("FetchMetadata against a silent server: %v, want context.DeadlineExceeded", err)
	}
}

func TestFetchMetadataURL(t *testing.T) {
	tests := []string{"", "ftp://example.com/x", "https://", "not a url", "http://[::1"}
	for _, u := range tests {
		if _, err := FetchMetadata(context.Background(), nil, u); err == nil {
			t.Errorf("FetchMetadata(%q) succeeded", u)
		}
	}
	// Credentials in the URL never appear in errors.
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()
	withCreds := strings.Replace(srv.URL, "http://", "http://user:s3cret@", 1)
	_, err := FetchMetadata(context.Background(), srv.Client(), withCreds)
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error %v shows the password", err)
	}
}

func TestMetadataCache(t *testing.T) {
	good, err := json.Marshal(testMetadata(t))
	if err != nil {
		t.Fatal(err)
	}
	var hits atomic.Int32
	var failing atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if failing.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write(good)
	}))
	defer srv.Close()
	clock := newFakeClock(testNow)
	cache, err := NewMetadataCache(MetadataCacheOptions{URL: srv.URL, Client: srv.Client(), TTL: time.Hour, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	get := func(step string, wantHits int32, wantErr bool) {
		t.Helper()
		m, err := cache.Get(ctx)
		if (err != nil) != wantErr || (err == nil && m.Issuer == "") {
			t.Errorf("%s: Get: %v, %v", step, m, err)
		}
		if got := hits.Load(); got != wantHits {
			t.Errorf("%s: %d fetches, want %d", step, got, wantHits)
		}
	}

	// Concurrent first callers share one fetch.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := cache.Get(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	get("within TTL", 1, false)
	clock.Advance(59 * time.Minute)
	get("just before TTL", 1, false)
	clock.Advance(time.Minute)
	get("at TTL", 2, false)

	failing.Store(true)
	clock.Advance(time.Hour)
	get("fetch fails", 3, true)
	get("retries after a failure", 4, true)
	failing.Store(false)
	get("recovers", 5, false)

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	clock.Advance(time.Hour)
	if _, err := cache.Get(cancelled); !errors.Is(err, context.Canceled) {
		t.Errorf("Get with a cancelled context: %v", err)
	}

	if _, err := NewMetadataCache(MetadataCacheOptions{}); err == nil {
		t.Error("NewMetadataCache without URL succeeded")
	}
}
