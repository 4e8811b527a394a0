package natsperms

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestNATSRequiresMutualTLS checks the other side of the TLS setup the
// components use: without the CA, without a client certificate, or with
// the right certificate but a wrong password, a client is refused.
func TestNATSRequiresMutualTLS(t *testing.T) {
	srv := startServer(t)
	tests := []struct {
		name string
		opts []nats.Option
	}{
		{"no TLS files", []nats.Option{nats.UserInfo("ingest", password("ingest"))}},
		{"CA but no client certificate", []nats.Option{nats.UserInfo("ingest", password("ingest")), nats.RootCAs(srv.tls.CA)}},
		{"client certificate but not the CA", []nats.Option{nats.UserInfo("ingest", password("ingest")), nats.ClientCert(srv.tls.ClientCert, srv.tls.ClientKey)}},
		{"wrong password", []nats.Option{nats.UserInfo("ingest", "guess"), nats.RootCAs(srv.tls.CA), nats.ClientCert(srv.tls.ClientCert, srv.tls.ClientKey)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := append([]nats.Option{nats.Timeout(3 * time.Second), nats.NoReconnect()}, tt.opts...)
			nc, err := nats.Connect(srv.url, opts...)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
		})
	}
	nc, err := nats.Connect(srv.url, nats.UserInfo("ingest", password("ingest")), nats.RootCAs(srv.tls.CA), nats.ClientCert(srv.tls.ClientCert, srv.tls.ClientKey))
	if err != nil {
		t.Fatalf("with everything right: %v", err)
	}
	if !nc.TLSRequired() {
		t.Error("the connection is not TLS")
	}
	nc.Close()
}
