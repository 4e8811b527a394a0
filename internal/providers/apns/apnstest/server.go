package apnstest

import (
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
)

// StartServer starts an HTTPS server speaking HTTP/2, as APNs does, that
// serves h, and writes its certificate into dir as provider-ca.pem: the CA
// a relay in another process trusts with --provider-ca-file. The caller
// closes the server.
func StartServer(dir string, h http.Handler) (*httptest.Server, string, error) {
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	caFile := filepath.Join(dir, "provider-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		srv.Close()
		return nil, "", fmt.Errorf("writing the provider's CA: %w", err)
	}
	return srv, caFile, nil
}
