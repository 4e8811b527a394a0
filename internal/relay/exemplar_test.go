package relay

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/pushproxy/pushproxy/internal/relay/registry"
	"github.com/pushproxy/pushproxy/internal/relayproto"
)

// TestProviderLatencyExemplar: a push's provider latency carries the
// device's reference as an exemplar, served to an OpenMetrics scraper, so a
// slow send leads to the device that every part's logs name the same way.
func TestProviderLatencyExemplar(t *testing.T) {
	ctx := context.Background()
	r := startRelay(t, Config{}, false)
	fab := newPartnerKey(t, "fabrikam.com")
	if _, _, err := r.store.AddCertificate(ctx, registry.CertificateRegistration{Organization: "fabrikam.com", Realm: testRealm, Certificate: fab.cert.X509.Raw}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.store.AddApp(ctx, registry.App{AppID: "com.example.mail", Provider: registry.KindLog}, false); err != nil {
		t.Fatal(err)
	}
	token := fab.token(t)
	// A 200 alone is not enough: until the relay's registry watch has the
	// app, the device is answered as an app fault, without a provider
	// latency to carry the exemplar.
	waitFor(t, "the relay to deliver", func() bool {
		got := r.publish(t, token, relayproto.Request{Notifications: []relayproto.Notification{notification("n1", 3, "com.example.mail", "phone-A")}})
		return got.status == http.StatusOK && got.response(t).Results[0].Devices[0].Status == relayproto.DeviceDelivered
	})
	req, err := http.NewRequest(http.MethodGet, r.base+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/openmetrics-text; version=1.0.0")
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	want := `# {device="` + relayproto.DeviceRef("com.example.mail", "phone-A") + `"}`
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "pushproxy_relay_provider_duration_seconds_bucket") && strings.Contains(line, want) {
			return
		}
	}
	t.Fatalf("no provider latency bucket with the exemplar %s in:\n%s", want, body)
}
