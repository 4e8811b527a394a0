// Package golist runs go list for the tests that check the direction of
// the project's imports. Those tests skip in -short mode: go list loads
// the module.
package golist

import (
	"os/exec"
	"strings"
	"testing"
)

// Module is the project's module path.
const Module = "github.com/pushproxy/pushproxy"

// Deps returns every package that patterns depend on, themselves included
// (go list -deps).
func Deps(tb testing.TB, patterns ...string) []string {
	tb.Helper()
	return list(tb, append([]string{"-deps"}, patterns...))
}

// Imports returns the packages pkg imports directly.
func Imports(tb testing.TB, pkg string) []string {
	tb.Helper()
	return list(tb, []string{"-f", "{{join .Imports \" \"}}", pkg})
}

func list(tb testing.TB, args []string) []string {
	tb.Helper()
	if testing.Short() {
		tb.Skip("runs go list")
	}
	out, err := exec.Command("go", append([]string{"list"}, args...)...).CombinedOutput()
	if err != nil {
		tb.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.Fields(string(out))
}
