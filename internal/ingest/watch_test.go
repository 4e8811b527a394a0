package ingest

import (
	"context"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/testfs"
)

// TestWatchFilesSeesAChange rewrites a watched file: the callback runs
// once for the change, not before.
func TestWatchFilesSeesAChange(t *testing.T) {
	path := testfs.Write(t, t.TempDir(), "tokens", "a\n")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	changed := make(chan struct{}, 4)
	go watchFiles(ctx, []string{path}, 10*time.Millisecond, func() { changed <- struct{}{} })
	select {
	case <-changed:
		t.Fatal("called before any change")
	case <-time.After(100 * time.Millisecond):
	}
	testfs.WriteFile(t, path, "a longer token\n", 0o600)
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("the change was not seen")
	}
}
