package benchtest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
)

// SaveProfile saves what a process's Go profile endpoint answers into
// file: url is its /debug/pprof/ address followed by the profile, e.g.
// http://127.0.0.1:6060/debug/pprof/profile?seconds=20 or
// .../debug/pprof/heap?gc=1 (a CPU profile answers once its seconds have
// passed).
func SaveProfile(ctx context.Context, client *http.Client, url, file string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("taking the profile %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("taking the profile %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("taking the profile %s: status %d", url, resp.StatusCode)
	}
	f, err := os.Create(file)
	if err != nil {
		return fmt.Errorf("saving the profile %s: %w", url, err)
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("saving the profile %s: %w", url, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("saving the profile %s: %w", url, err)
	}
	return nil
}
