// Package version holds the build's version, set by the Makefile with
// -ldflags "-X github.com/pushproxy/pushproxy/internal/version.Version=...".
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/nats-io/nats-server/v2/server"
)

// Version is the release this binary was built from, or "dev".
var Version = "dev"

// Commit is the commit this binary was built from, when the Makefile set
// it; otherwise the build's own record is used, if any.
var Commit = ""

// UserAgent is the User-Agent of pushproxy's HTTP clients.
func UserAgent() string { return "pushproxy/" + Version }

// String is what --version prints: the program, its version, the commit
// it was built from (when the build recorded one), the Go version and the
// NATS server version it embeds and was tested with.
func String(program string) string {
	commit := Commit
	if info, ok := debug.ReadBuildInfo(); ok && commit == "" {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				commit = s.Value
				if len(commit) > 12 {
					commit = commit[:12]
				}
			}
		}
	}
	if commit == "" {
		commit = "unknown"
	}
	return fmt.Sprintf("%s %s (commit %s, %s, nats-server %s)", program, Version, commit, runtime.Version(), server.VERSION)
}
