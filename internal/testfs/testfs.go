// Package testfs writes and reads the files of tests (secrets, lists,
// configuration, golden data), failing the test when it cannot. Nothing
// here is fit for production.
package testfs

import (
	"os"
	"path/filepath"
	"testing"
)

// Write writes content to the file name in dir, readable by its owner only
// (0600, as the secrets and lists the services read), and returns its path.
func Write(tb testing.TB, dir, name, content string) string {
	tb.Helper()
	path := filepath.Join(dir, name)
	WriteFile(tb, path, content, 0o600)
	return path
}

// WriteFile writes content to path with permissions perm, as os.WriteFile
// does, replacing the file if there is one.
func WriteFile(tb testing.TB, path, content string, perm os.FileMode) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		tb.Fatalf("writing a test file: %v", err)
	}
}

// Read returns the content of the file at path.
func Read(tb testing.TB, path string) []byte {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("reading a test file: %v", err)
	}
	return data
}
