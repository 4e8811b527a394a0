package graph

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/pushproxy/pushproxy/internal/flagenv"
)

// Settings are the operator's settings of the Graph source, as flags.
type Settings struct {
	// UsersFile is the directory file (see DirectoryFile); without it the
	// source is disabled.
	UsersFile string
	// ClientStates are Config.ClientStates; ClientStateFile adds one per line.
	ClientStates    []string
	ClientStateFile string
	// Key is Config.Key.
	Key string
	// DefaultMailbox is Config.DefaultMailbox.
	DefaultMailbox string
}

// Flags registers the Graph source's flags on fs and returns the settings
// they fill.
func Flags(fs *flag.FlagSet) *Settings {
	s := &Settings{}
	fs.StringVar(&s.UsersFile, "graph-users", "", `JSON file mapping Graph user ids to users: {"users":[{"user_id","tenant_id","tenant","address"}]}; without it the Graph endpoint is disabled`)
	fs.Var((*flagenv.StringList)(&s.ClientStates), "graph-client-state", "clientState secret(s) of the Graph subscriptions, comma-separated (several while rotating); TENANT[|TENANT...]:SECRET lets a secret report only for those tenants (403 otherwise), a bare SECRET for any; prefer pushctl credentials create --kind graph (scoped, rotated and revoked without a restart)")
	fs.StringVar(&s.ClientStateFile, "graph-client-state-file", "", "file with more Graph clientState secrets, one per line")
	fs.StringVar(&s.Key, "graph-key", "", "secret that the Graph notificationUrl carries as ?key=... (optional: the clientState already authenticates notifications)")
	fs.StringVar(&s.DefaultMailbox, "graph-default-mailbox", "", "mailbox of Graph notifications whose resource names no folder (default INBOX: subscribe to users/{id}/mailFolders('inbox')/messages)")
	return s
}

// Enabled reports whether the settings name a directory file. Without any
// configured clientState, only graph credentials (pushctl credentials
// create --kind graph) authenticate notifications.
func (s *Settings) Enabled() bool { return s.UsersFile != "" }

// Config loads the directory and the secrets into a Config; the caller
// adds the log, the metrics registry and callbacks.
func (s *Settings) Config() (Config, error) {
	dir, err := LoadDirectoryFile(s.UsersFile)
	if err != nil {
		return Config{}, err
	}
	states := append([]string(nil), s.ClientStates...)
	if s.ClientStateFile != "" {
		data, err := os.ReadFile(s.ClientStateFile)
		if err != nil {
			return Config{}, fmt.Errorf("reading Graph clientState secrets: %w", err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				states = append(states, line)
			}
		}
	}
	return Config{ClientStates: states, Users: dir, Key: s.Key, DefaultMailbox: s.DefaultMailbox}, nil
}
