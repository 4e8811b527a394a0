// Command ingest receives mailbox changes from mail systems over HTTP and
// stores them in the MAIL stream of NATS JetStream. It is a thin main over
// internal/ingest.
package main

import (
	"context"
	"io"
	"os"

	"github.com/pushproxy/pushproxy/internal/daemon"
	"github.com/pushproxy/pushproxy/internal/ingest"
)

const description = `Receives mailbox changes and stores them in NATS JetStream (stream MAIL),
answering 2xx only once JetStream has acknowledged them, and 503 with
Retry-After while it is unavailable.

Endpoints:
  POST     /v1/events       native JSON: one event, a JSON array, or NDJSON
                            (Authorization: Bearer <--native-token>)
  PUT|POST /v1/dovecot/ox   Dovecot's OX driver (push_notification_driver = ox:url=...)
  POST     /v1/dovecot/lua  pushproxy's Dovecot Lua script (deploy/dovecot/pushproxy.lua)
                            (both Dovecot endpoints: Basic --dovecot-user/--dovecot-password)
  POST     /v1/ews          Exchange EWS push notifications (with --ews-subscriptions)
  POST     /v1/graph        Microsoft Graph change notifications (with --graph-users)
  POST|DELETE|GET /v1/subscriptions
                            device subscriptions (Authorization: Bearer <--native-token>)
  GET      /healthz, /readyz, /metrics

A source without credentials is disabled. Put a TLS proxy in front of the
server when sources reach it over an untrusted network.`

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

func run(args []string, getenv func(string) string, stderr io.Writer) int {
	cmd := daemon.New("ingest", "ingest [flags]", description, stderr, daemon.Options{Provision: true})
	cfg := ingest.Flags(cmd.Flags)
	extras := ingest.ExtraFlags(cmd.Flags)
	return cmd.Main(context.Background(), args, getenv, func(ctx context.Context, env daemon.Env) error {
		exts, err := extras.Extensions(ctx, env.Conn, env.Registry)
		if err != nil {
			return err
		}
		return ingest.Run(ctx, *cfg, env.Conn, env.Log, env.Registry, exts...)
	})
}
