package main

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"time"
)

// part is a part of the pipeline process that CPU samples are charged to:
// a sample goes to the first part whose pattern matches a frame of its
// stack, so that, e.g., ingest's JetStream publishes count as ingest and
// the NATS server's work for them as the NATS server.
type part struct {
	name string
	re   *regexp.Regexp
}

// pipelineParts are the parts in the order they are tried.
func pipelineParts() []part {
	return []part{
		{"garbage collection (background and assists)", regexp.MustCompile(`^runtime\.(gcBgMarkWorker|bgsweep|bgscavenge|gcAssistAlloc)`)},
		{"S2S and provider tokens (JWT, RSA)", regexp.MustCompile(`pushproxy/internal/(tokens|s2s)\.|golang-jwt`)},
		{"relay -> APNs: HTTP/2 client, TLS", regexp.MustCompile(`pushproxy/internal/providers/|http2[cC]lient|http2\.\(\*ClientConn|crypto/tls\.\(\*Conn\)`)},
		{"relay: request handling", regexp.MustCompile(`pushproxy/internal/relay`)},
		{"dispatcher -> relay: HTTP client", regexp.MustCompile(`pushproxy/internal/(delivery|relayclient)\.|net/http\.\(\*persistConn\)|net/http\.\(\*Transport\)`)},
		{"dispatcher: apply, coalesce, settle (its NATS calls too)", regexp.MustCompile(`pushproxy/internal/(dispatcher|coalesce|unread)\.`)},
		{"ingest: parse, validate, publish (its NATS calls too)", regexp.MustCompile(`pushproxy/internal/(ingest|sources|subscriptions|events)`)},
		{"monitor", regexp.MustCompile(`pushproxy/internal/(monitor|alerting|probe)\.`)},
		{"NATS server: file store", regexp.MustCompile(`nats-server/v2/server\.(\(\*(fileStore|msgBlock|consumerFileStore)\)|writeAtomically)`)},
		{"NATS server: streams, consumers, dedup", regexp.MustCompile(`nats-server/v2/server\.\(\*(stream|consumer)\)`)},
		{"NATS server: connections, routing", regexp.MustCompile(`nats-server/v2/server`)},
		{"NATS client: reading, dispatching", regexp.MustCompile(`nats%2ego|nats\.go/jetstream`)},
		{"HTTP servers: reading requests, writing answers", regexp.MustCompile(`^net/http\.(\(\*conn\)|\(\*response\)|\(\*connReader\))`)},
		{"metrics", regexp.MustCompile(`prometheus`)},
		{"other (scheduler, idle syscalls, timers)", regexp.MustCompile(`.`)},
	}
}

// traceSeparator separates the samples of go tool pprof -traces.
const traceSeparator = "-----------+-------------------------------------------------------"

// partShares reads a CPU profile and returns each part's share of its
// samples, in the order of parts, and the profile's total.
func partShares(ctx context.Context, parts []part, file string) ([]float64, time.Duration, error) {
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-traces", file).Output()
	if err != nil {
		return nil, 0, fmt.Errorf("reading %s with go tool pprof: %w", file, err)
	}
	return chargeTraces(parts, string(out))
}

// chargeTraces charges each sample of go tool pprof -traces output to one
// of parts.
func chargeTraces(parts []part, traces string) ([]float64, time.Duration, error) {
	shares := make([]float64, len(parts))
	var total time.Duration
	blocks := strings.Split(traces, traceSeparator)
	for _, block := range blocks[min(1, len(blocks)):] {
		var frames []string
		var value time.Duration
		for _, line := range strings.Split(strings.Trim(block, "\n"), "\n") {
			line = strings.TrimSpace(line)
			if value == 0 {
				// Labels ("stream:  MAIL") come before the sample's value
				// and its first frame.
				v, frame, ok := strings.Cut(line, " ")
				if !ok || strings.HasSuffix(v, ":") {
					continue
				}
				d, err := time.ParseDuration(v)
				if err != nil {
					return nil, 0, fmt.Errorf("sample value %q: %w", v, err)
				}
				value, line = d, strings.TrimSpace(frame)
			}
			if line != "" {
				frames = append(frames, line)
			}
		}
		if value == 0 {
			continue
		}
		total += value
		for i, p := range parts {
			if matchesAny(p.re, frames) {
				shares[i] += float64(value)
				break
			}
		}
	}
	if total > 0 {
		for i := range shares {
			shares[i] /= float64(total)
		}
	}
	return shares, total, nil
}

// matchesAny reports whether re matches one of frames.
func matchesAny(re *regexp.Regexp, frames []string) bool {
	for _, f := range frames {
		if re.MatchString(f) {
			return true
		}
	}
	return false
}
