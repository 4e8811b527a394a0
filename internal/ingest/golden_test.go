package ingest_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/testfs"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the current output")

// readRequest reads a request file of testdata/requests: the method and
// path, header lines, a blank line and the body exactly as the source sends
// it (the file's final newline is not part of it).
func readRequest(t *testing.T, path, baseURL string) *http.Request {
	t.Helper()
	head, body, ok := bytes.Cut(testfs.Read(t, path), []byte("\n\n"))
	if !ok {
		t.Fatalf("%s: no blank line after the headers", path)
	}
	lines := strings.Split(string(head), "\n")
	method, target, _ := strings.Cut(lines[0], " ")
	req, err := http.NewRequest(method, baseURL+target, bytes.NewReader(bytes.TrimSuffix(body, []byte("\n"))))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range lines[1:] {
		name, value, _ := strings.Cut(line, ": ")
		req.Header.Add(name, value)
	}
	return req
}

// goldenResult is what a request file must produce: the answer and the
// events stored in the stream.
type goldenResult struct {
	Status int             `json:"status"`
	Answer json.RawMessage `json:"answer"`
	Stored []any           `json:"stored"`
}

// TestGoldenRequests sends every testdata/requests file, in the real
// formats of each source, to a fresh server and compares the answer and
// the stored events with testdata/golden (go test -update rewrites them).
func TestGoldenRequests(t *testing.T) {
	files, err := filepath.Glob("testdata/requests/*.http")
	if err != nil || len(files) == 0 {
		t.Fatalf("no request files: %v", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".http")
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			a := h.do(t, readRequest(t, file, h.url))
			res := goldenResult{Status: a.status, Answer: json.RawMessage(bytes.TrimSpace(a.raw))}
			for _, e := range h.stored(t) {
				res.Stored = append(res.Stored, e)
			}
			got, err := json.MarshalIndent(res, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", "golden", name+".json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if want := testfs.Read(t, path); !bytes.Equal(got, want) {
				t.Fatalf("%s differs from %s (go test -update rewrites it):\n%s", file, path, got)
			}
		})
	}
}
