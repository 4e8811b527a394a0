// Package version holds the build's version, set by the Makefile with
// -ldflags "-X github.com/pushproxy/pushproxy/internal/version.Version=...".
package version

// Version is the release this binary was built from, or "dev".
var Version = "dev"

// UserAgent is the User-Agent of pushproxy's HTTP clients.
func UserAgent() string { return "pushproxy/" + Version }
