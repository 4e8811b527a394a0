// Package counters wires the mail systems that reconciliation reads true
// counts from (each a sources.Counter of a package under internal/sources)
// to their flags, in the order they are tried: doveadm, IMAP, Graph, EWS.
package counters

import (
	"errors"
	"flag"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/sources"
	"github.com/pushproxy/pushproxy/internal/sources/dovecot"
	"github.com/pushproxy/pushproxy/internal/sources/ews"
	"github.com/pushproxy/pushproxy/internal/sources/graph"
	"github.com/pushproxy/pushproxy/internal/sources/imap"
)

// Settings are the flags of every counter.
type Settings struct {
	Doveadm *dovecot.DoveadmSettings
	IMAP    *imap.Settings
	Graph   *graph.CounterSettings
	EWS     *ews.CounterSettings
}

// Shared are settings that ingest's flags register too when both run in
// one process (pushctl standalone): the Graph source's directory, the
// Graph app, the EWS server and the IMAP server. A nil field is registered
// by Flags.
type Shared struct {
	Graph    *graph.Settings
	GraphApp *graph.CounterSettings
	EWSApp   *ews.CounterSettings
	IMAP     *imap.Settings
}

// Flags registers every counter's flags on fs, except those of shared.
// The Graph counter reads the users of the Graph source's directory
// (--graph-users).
func Flags(fs *flag.FlagSet, shared Shared) *Settings {
	if shared.Graph == nil {
		shared.Graph = &graph.Settings{}
		fs.StringVar(&shared.Graph.UsersFile, "graph-users", "", `JSON file mapping Graph user ids to users: {"users":[{"user_id","tenant_id","tenant","address"}]}; the Graph counter reads these users`)
	}
	if shared.GraphApp == nil {
		shared.GraphApp = graph.CounterFlags(fs, shared.Graph)
	}
	if shared.IMAP == nil {
		shared.IMAP = imap.Flags(fs)
	}
	if shared.EWSApp == nil {
		shared.EWSApp = ews.CounterFlags(fs)
	}
	return &Settings{
		Doveadm: dovecot.DoveadmFlags(fs),
		IMAP:    shared.IMAP,
		Graph:   shared.GraphApp,
		EWS:     shared.EWSApp,
	}
}

// ErrNone is Build's error when no counter is configured.
var ErrNone = errors.New("no mail system to read counts from: configure --doveadm-url, --imap-addr, --graph-app-tenant-id or --ews-url")

// Enabled reports whether any counter is configured.
func (s *Settings) Enabled() bool {
	return s.Doveadm.Enabled() || s.IMAP.Enabled() || s.Graph.CounterEnabled() || s.EWS.CounterEnabled()
}

// Build returns the configured counters in the order they are tried, or
// ErrNone.
func (s *Settings) Build(log zerolog.Logger, reg prometheus.Registerer) ([]sources.Counter, error) {
	var out []sources.Counter
	if s.Doveadm.Enabled() {
		c, err := s.Doveadm.Counter()
		if err != nil {
			return nil, fmt.Errorf("the doveadm counter: %w", err)
		}
		out = append(out, c)
	}
	if s.IMAP.Enabled() {
		c, err := s.IMAP.Counter()
		if err != nil {
			return nil, fmt.Errorf("the IMAP counter: %w", err)
		}
		out = append(out, c)
	}
	if s.Graph.CounterEnabled() {
		cfg, err := s.Graph.CounterConfig()
		if err != nil {
			return nil, err
		}
		cfg.Log, cfg.Metrics = log.With().Str("counter", "graph").Logger(), reg
		c, err := graph.NewCounter(cfg)
		if err != nil {
			return nil, fmt.Errorf("the Graph counter: %w", err)
		}
		out = append(out, c)
	}
	if s.EWS.CounterEnabled() {
		cfg, err := s.EWS.CounterConfig()
		if err != nil {
			return nil, err
		}
		cfg.Log, cfg.Metrics = log.With().Str("counter", "ews").Logger(), reg
		c, err := ews.NewCounter(cfg)
		if err != nil {
			return nil, fmt.Errorf("the EWS counter: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, ErrNone
	}
	return out, nil
}
