package chaos

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLocalCluster runs deploy/local/cluster.sh, what make cluster runs,
// and follows the README's walkthrough through it: a subscription and an
// event sent to ingest with the credential the script made come out as a
// badge on the relay's devices page. Then Ctrl-C must stop every process
// and free every port.
func TestLocalCluster(t *testing.T) {
	mode := strings.ToLower(os.Getenv(envMode))
	if testing.Short() || mode == "off" || mode == "0" {
		t.Skip("cluster test skipped (-short or " + envMode + "=off)")
	}
	ports := []int{4231, 4232, 4233, 6231, 6232, 6233, 8225, 8227, 8229, 8231, 8232, 8233, 8241, 8242}
	for _, p := range ports {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), 200*time.Millisecond); err == nil {
			c.Close()
			t.Skipf("port %d is in use (another make cluster?); the script uses fixed ports", p)
		}
	}
	var bins buildOnce
	bin, err := bins.get(t.Context(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command("bash", filepath.Join(root, "deploy", "local", "cluster.sh"))
	cmd.Env = append(os.Environ(), "BIN="+bin, "CLUSTER_DIR="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	banner := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		seen := false
		for sc.Scan() {
			if !seen && strings.HasPrefix(sc.Text(), "pushproxy cluster:") {
				seen = true
				close(banner)
			}
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // whatever is left
	})
	logs := func() string {
		var b strings.Builder
		for _, name := range []string{"nats-1", "ingest", "dispatcher-1", "relay", "monitor", "pushctl"} {
			data, _ := os.ReadFile(filepath.Join(dir, name+".log"))
			lines := strings.Split(strings.TrimSpace(string(data)), "\n")
			fmt.Fprintf(&b, "---- %s\n%s\n", name, strings.Join(lines[max(0, len(lines)-8):], "\n"))
		}
		return b.String()
	}
	select {
	case <-banner:
	case err := <-exited:
		t.Fatalf("cluster.sh ended before it was up: %v\n%s\n%s", err, stderr.String(), logs())
	case <-time.After(3 * time.Minute):
		t.Fatalf("cluster.sh was not up within 3 minutes\n%s\n%s", stderr.String(), logs())
	}

	token, err := os.ReadFile(filepath.Join(dir, "ingest-token"))
	if err != nil || len(strings.TrimSpace(string(token))) == 0 {
		t.Fatalf("the script wrote no ingest credential: %v", err)
	}
	send := func(path, body string) int {
		req, err := http.NewRequest(http.MethodPost, "http://127.0.0.1:8225"+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Ingest answers once its credentials are loaded; the first requests
	// may come before.
	deadline := time.Now().Add(time.Minute)
	for send("/v1/subscriptions", `{"tenant":"example.com","user":"alice@example.com","appId":"demo","deviceId":"phone-1","platform":"APNS"}`) != http.StatusCreated {
		if time.Now().After(deadline) {
			t.Fatalf("subscribing through the cluster's ingest failed\n%s", logs())
		}
		time.Sleep(500 * time.Millisecond)
	}
	if code := send("/v1/events", `{"user":"alice@example.com","tenant":"example.com","kind":"new","unread":3,"change_id":"msg-1"}`); code != http.StatusOK {
		t.Fatalf("event: %d\n%s", code, logs())
	}
	deadline = time.Now().Add(time.Minute)
	for devicesPageBadge() != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("no badge 3 on the devices page within a minute\n%s", logs())
		}
		time.Sleep(200 * time.Millisecond)
	}

	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(time.Minute):
		t.Fatalf("Ctrl-C did not stop the cluster within a minute\n%s", logs())
	}
	for _, p := range ports {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), 200*time.Millisecond); err == nil {
			c.Close()
			t.Errorf("port %d still answers after Ctrl-C", p)
		}
	}
}

// devicesPageBadge is alice's demo device's count on the relay's devices page, or -1.
func devicesPageBadge() int {
	resp, err := http.Get("http://127.0.0.1:8227/devices/devices.json")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var page struct {
		Devices []struct {
			Tenant string `json:"tenant"`
			AppID  string `json:"appId"`
			Count  int    `json:"count"`
		}
	}
	if json.NewDecoder(resp.Body).Decode(&page) != nil {
		return -1
	}
	for _, d := range page.Devices {
		if d.Tenant == "example.com" && d.AppID == "demo" {
			return d.Count
		}
	}
	return -1
}
