package ingest

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestWatchFilesSeesAChange rewrites a watched file: the callback runs
// once for the change, not before.
func TestWatchFilesSeesAChange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte("a\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed := make(chan struct{}, 4)
	go watchFiles(ctx, []string{path}, 10*time.Millisecond, func() { changed <- struct{}{} })
	select {
	case <-changed:
		t.Fatal("called before any change")
	case <-time.After(100 * time.Millisecond):
	}
	if err := os.WriteFile(path, []byte("a longer token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("the change was not seen")
	}
}
