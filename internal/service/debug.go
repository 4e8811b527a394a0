package service

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/rs/zerolog"
)

// DebugServer serves Go's profiles (net/http/pprof under /debug/pprof/)
// on a loopback address of its own, never beside the service's routes:
// a profile shows the process's internals and costs CPU, so it is for an
// operator on the machine (or through kubectl port-forward).
type DebugServer struct {
	ln  net.Listener
	log zerolog.Logger
}

// CheckDebugAddr refuses a debug address that is not a loopback
// host:port.
func CheckDebugAddr(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("the debug address %q is not host:port: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("the debug address %q is not a loopback address (profiles show the process's internals): use 127.0.0.1:PORT", addr)
	}
	return nil
}

// ListenDebug listens on addr, which must be a loopback address such as
// 127.0.0.1:6060 (CheckDebugAddr).
func ListenDebug(addr string, log zerolog.Logger) (*DebugServer, error) {
	if err := CheckDebugAddr(addr); err != nil {
		return nil, err
	}
	ln, err := Listen(addr)
	if err != nil {
		return nil, err
	}
	return &DebugServer{ln: ln, log: log.With().Str("component", "debug").Logger()}, nil
}

// Addr is where it listens.
func (d *DebugServer) Addr() net.Addr { return d.ln.Addr() }

// Run serves the profiles until ctx ends.
func (d *DebugServer) Run(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// A profile being taken is cut at shutdown: a second of drain.
	return Serve(ctx, d.log, d.ln, mux, time.Second)
}

// DebugAddrUsage is the help of the --debug-addr flags.
const DebugAddrUsage = "loopback host:port serving Go's profiles at /debug/pprof/ (e.g. 127.0.0.1:6060; go tool pprof http://127.0.0.1:6060/debug/pprof/profile); empty: off"
