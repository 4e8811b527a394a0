package relay

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/pushproxy/pushproxy/internal/relay/registry"
	"github.com/pushproxy/pushproxy/internal/relayproto"
)

// chromiumPath is Debian's chromium package.
const chromiumPath = "/usr/bin/chromium"

// browser is a headless chromium driven over the DevTools protocol.
type browser struct {
	t    *testing.T
	ws   *websocket.Conn
	next int
}

// openBrowser starts headless chromium on url and connects to its page.
func openBrowser(t *testing.T, url string) *browser {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("%s is missing (apt-get install chromium): skipping the browser test", chromiumPath)
	}
	profile := t.TempDir()
	cmd := exec.Command(chromiumPath,
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-default-apps", "--no-first-run", "--mute-audio", "--hide-scrollbars",
		"--user-data-dir="+profile, "--remote-debugging-port=0", "--remote-allow-origins=*",
		"--window-size=1100,520", url)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		// The wrapper script starts several processes: stop the group we made.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})

	var port int
	waitFor(t, "chromium's DevTools port", func() bool {
		data, err := os.ReadFile(filepath.Join(profile, "DevToolsActivePort"))
		if err != nil {
			return false
		}
		first, _, _ := strings.Cut(string(data), "\n")
		port, err = strconv.Atoi(strings.TrimSpace(first))
		return err == nil && port > 0
	})
	var wsURL string
	waitFor(t, "chromium's page target", func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/json/list", port))
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var targets []struct{ Type, URL, WebSocketDebuggerURL string }
		if json.NewDecoder(resp.Body).Decode(&targets) != nil {
			return false
		}
		for _, tg := range targets {
			if tg.Type == "page" && strings.HasPrefix(tg.URL, url) {
				wsURL = tg.WebSocketDebuggerURL
				return true
			}
		}
		return false
	})
	ws, err := websocket.Dial(wsURL, "", fmt.Sprintf("http://127.0.0.1:%d/", port))
	if err != nil {
		t.Fatalf("connecting to chromium: %v\n%s", err, stderr.String())
	}
	t.Cleanup(func() { ws.Close() })
	return &browser{t: t, ws: ws}
}

// call sends a DevTools command and returns its result.
func (b *browser) call(method string, params any) json.RawMessage {
	b.t.Helper()
	b.next++
	id := b.next
	if err := websocket.JSON.Send(b.ws, map[string]any{"id": id, "method": method, "params": params}); err != nil {
		b.t.Fatalf("%s: %v", method, err)
	}
	if err := b.ws.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		b.t.Fatal(err)
	}
	for {
		var msg struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := websocket.JSON.Receive(b.ws, &msg); err != nil {
			b.t.Fatalf("%s: %v", method, err)
		}
		if msg.ID != id {
			continue // an event
		}
		if msg.Error != nil {
			b.t.Fatalf("%s: %s", method, msg.Error.Message)
		}
		return msg.Result
	}
}

// eval evaluates a JavaScript expression in the page and returns its value
// as a string.
func (b *browser) eval(expr string) string {
	b.t.Helper()
	var r struct {
		Result struct {
			Value any `json:"value"`
		} `json:"result"`
	}
	if err := json.Unmarshal(b.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}), &r); err != nil {
		b.t.Fatal(err)
	}
	return fmt.Sprint(r.Result.Value)
}

// rowsJS lists the table's rows as "reference|tenant|user|label|badge"
// strings.
const rowsJS = `JSON.stringify(Array.from(document.querySelectorAll("#devices tbody tr")).map(function (tr) {
  return [".device", ".tenant", ".user", ".label", ".badge"].map(function (c) { return tr.querySelector(c).textContent; }).join("|");
}))`

// sortedRowsJS is rowsJS in sorted order.
const sortedRowsJS = `JSON.stringify(JSON.parse(` + rowsJS + `).sort())`

func TestDevicesPageInBrowser(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("%s is missing (apt-get install chromium): skipping the browser test", chromiumPath)
	}
	ctx := context.Background()
	// Beside the on-premises side (pushctl standalone) the page names
	// devices; here phone-A is alice's and browser-B has no name.
	names := func(_ context.Context, tenant, ref string) (string, string) {
		if tenant == "fabrikam.com" && ref == relayproto.DeviceRef("com.example.mail", "phone-A") {
			return "alice@fabrikam.com", "alice's iPhone"
		}
		return "", ""
	}
	r := startRelay(t, Config{DevicesPage: true, DeviceNames: names}, false)
	fab := newPartnerKey(t, "fabrikam.com")
	if _, _, err := r.store.AddCertificate(ctx, registry.CertificateRegistration{Organization: "fabrikam.com", Realm: testRealm, Certificate: fab.cert.X509.Raw}); err != nil {
		t.Fatal(err)
	}
	for _, app := range []string{"com.example.mail", "com.example.webmail"} {
		if _, err := r.store.AddApp(ctx, registry.App{AppID: app, Provider: registry.KindLog}, false); err != nil {
			t.Fatal(err)
		}
	}
	token := fab.token(t)
	send := func(notifications ...relayproto.Notification) bool {
		got := r.publish(t, token, relayproto.Request{Notifications: notifications})
		if got.status != http.StatusOK {
			return false
		}
		for _, res := range got.response(t).Results {
			for _, d := range res.Devices {
				if d.Status != relayproto.DeviceDelivered {
					return false
				}
			}
		}
		return true
	}
	// A badge before the page opens: rendered by the server.
	waitFor(t, "the relay to take the first badge", func() bool { return send(notification("n1", 2, "com.example.mail", "phone-A")) })

	b := openBrowser(t, r.base+DefaultDevicesPath)
	waitFor(t, "the page to load and connect its event stream", func() bool {
		return b.eval(`document.readyState === "complete" && document.body.dataset.live === "true"`) == "true"
	})
	phoneA, browserB := relayproto.DeviceRef("com.example.mail", "phone-A"), relayproto.DeviceRef("com.example.webmail", "browser-B")
	if got := b.eval(rowsJS); got != `["`+phoneA+`|fabrikam.com|alice@fabrikam.com|alice's iPhone|2"]` {
		t.Fatalf("rows after load: %s", got)
	}

	// Badges sent while the page is open appear without a reload.
	if !send(notification("n2", 5, "com.example.mail", "phone-A"), notification("n3", 17, "com.example.webmail", "browser-B")) {
		t.Fatal("second publish was not delivered")
	}
	// The two sends run concurrently, so the rows may come in either order.
	want := `["` + phoneA + `|fabrikam.com|alice@fabrikam.com|alice's iPhone|5","` + browserB + `|fabrikam.com|||17"]`
	var got string
	deadline := time.Now().Add(30 * time.Second)
	for got != want {
		if time.Now().After(deadline) {
			t.Fatalf("rows after the live update: %s, want %s", got, want)
		}
		time.Sleep(20 * time.Millisecond)
		got = b.eval(sortedRowsJS)
	}
	if html := b.eval("document.body.innerHTML"); strings.Contains(html, "phone-A") || strings.Contains(html, "browser-B") {
		t.Fatal("the page shows a device address")
	}

	// A screenshot, to look at: kept in PUSHPROXY_SCREENSHOT when set.
	var shot struct {
		Data string `json:"data"`
	}
	if err := json.Unmarshal(b.call("Page.captureScreenshot", map[string]any{"format": "png"}), &shot); err != nil {
		t.Fatal(err)
	}
	img, err := base64.StdEncoding.DecodeString(shot.Data)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(img))
	if err != nil || cfg.Width < 400 || cfg.Height < 200 {
		t.Fatalf("screenshot %dx%d: %v", cfg.Width, cfg.Height, err)
	}
	path := os.Getenv("PUSHPROXY_SCREENSHOT")
	if path == "" {
		path = filepath.Join(t.TempDir(), "devices.png")
	}
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot %dx%d in %s", cfg.Width, cfg.Height, path)
}
