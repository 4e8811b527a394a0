package testfs

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteAndRead(t *testing.T) {
	dir := t.TempDir()
	path := Write(t, dir, "secret", "s3cret\n")
	if path != filepath.Join(dir, "secret") {
		t.Fatalf("path %q", path)
	}
	if got := string(Read(t, path)); got != "s3cret\n" {
		t.Fatalf("read %q", got)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", info.Mode())
	}
	WriteFile(t, path, "changed", 0o644)
	if got := string(Read(t, path)); got != "changed" {
		t.Fatalf("read %q after WriteFile", got)
	}
}
