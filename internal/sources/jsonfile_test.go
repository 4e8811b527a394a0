package sources

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/testfs"
)

type namesFile struct {
	Names []string `json:"names"`
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	errEmpty := errors.New("no names")
	count := func(f namesFile) (int, error) {
		if len(f.Names) == 0 {
			return 0, errEmpty
		}
		return len(f.Names), nil
	}
	tests := []struct {
		name    string
		path    string
		want    int
		wantErr string
	}{
		{"ok", testfs.Write(t, dir, "ok.json", `{"names":["a","b"]}`), 2, ""},
		{"missing", filepath.Join(dir, "missing.json"), 0, "reading test list: "},
		{"unknown field", testfs.Write(t, dir, "typo.json", `{"nmaes":["a"]}`), 0, "parsing test list " + filepath.Join(dir, "typo.json") + `: json: unknown field "nmaes"`},
		{"not json", testfs.Write(t, dir, "bad.json", `{`), 0, "parsing test list "},
		{"build fails", testfs.Write(t, dir, "empty.json", `{"names":[]}`), 0, "test list " + filepath.Join(dir, "empty.json") + ": no names"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LoadFile(tt.path, "test list", count)
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("Load = %d, %v; want %d", got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) || got != 0 {
				t.Fatalf("Load = %d, %v; want an error starting %q", got, err, tt.wantErr)
			}
		})
	}
}
