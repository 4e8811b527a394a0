package logpush

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/providers"
	"github.com/pushproxy/pushproxy/internal/providers/providerstest"
)

func send(t *testing.T, p *Provider, appID, device string, count int) {
	t.Helper()
	if err := p.Send(context.Background(), providers.Badge{AppID: appID, Device: device, Count: count}); err != nil {
		t.Fatal(err)
	}
}

func counts(es []Entry) string {
	var parts []string
	for _, e := range es {
		parts = append(parts, fmt.Sprintf("%s/%s=%d", e.Badge.AppID, e.Badge.Device, e.Badge.Count))
	}
	return strings.Join(parts, " ")
}

func TestLatestAndDevices(t *testing.T) {
	p := New(Config{MaxDevices: 2})
	if p.Name() != "log" {
		t.Errorf("Name %q", p.Name())
	}
	send(t, p, "app", "a", 1)
	send(t, p, "app", "b", 2)
	send(t, p, "app", "a", -3) // clamps to 0, moves a to the front
	if got, want := counts(p.Devices()), "app/a=0 app/b=2"; got != want {
		t.Errorf("Devices %s, want %s", got, want)
	}
	send(t, p, "other", "a", 4) // another app's device; evicts b
	if got, want := counts(p.Devices()), "other/a=4 app/a=0"; got != want {
		t.Errorf("Devices %s, want %s", got, want)
	}
	if _, ok := p.Latest("app", "b"); ok {
		t.Error("evicted device still remembered")
	}
	e, ok := p.Latest("app", "a")
	if !ok || e.Badge.Count != 0 || e.Ref != e.Badge.Ref() || e.Updated.IsZero() {
		t.Errorf("Latest = %+v, %v", e, ok)
	}
}

func TestSubscriptionCoalesces(t *testing.T) {
	p := New(Config{})
	s := p.Subscribe()
	defer s.Close()
	send(t, p, "app", "a", 1)
	send(t, p, "app", "b", 5)
	send(t, p, "app", "a", 2)
	send(t, p, "app", "a", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := s.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c, want := counts(got), "app/a=3 app/b=5"; c != want {
		t.Errorf("Next %s, want %s", c, want)
	}
}

func TestSubscriptionWaits(t *testing.T) {
	p := New(Config{})
	s := p.Subscribe()
	got := make(chan string, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		es, err := s.Next(ctx)
		got <- fmt.Sprint(counts(es), err)
	}()
	send(t, p, "app", "a", 7)
	if g := <-got; g != "app/a=7<nil>" {
		t.Errorf("Next = %s", g)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Next(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Next with a cancelled context: %v", err)
	}

	done := make(chan error, 1)
	go func() {
		_, err := s.Next(context.Background())
		done <- err
	}()
	s.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Errorf("Next after Close: %v", err)
	}
	send(t, p, "app", "a", 8) // no subscribers left; must not block
}

func TestConcurrentSendersAndSubscribers(t *testing.T) {
	p := New(Config{})
	const devices, rounds = 8, 50
	subs := []*Subscription{p.Subscribe(), p.Subscribe()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	last := make([]map[string]int, len(subs))
	var readers sync.WaitGroup
	for i, s := range subs {
		last[i] = map[string]int{}
		readers.Go(func() {
			for {
				es, err := s.Next(ctx)
				if err != nil {
					return
				}
				for _, e := range es {
					last[i][e.Badge.Device] = e.Badge.Count
				}
			}
		})
	}
	var senders sync.WaitGroup
	for d := range devices {
		senders.Go(func() {
			for r := 1; r <= rounds; r++ {
				if err := p.Send(ctx, providers.Badge{AppID: "app", Device: fmt.Sprint(d), Count: r}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	senders.Wait()
	// Every subscriber ends with each device's last count.
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range subs {
		for {
			s.p.mu.Lock()
			n := len(s.order)
			s.p.mu.Unlock()
			if n == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	cancel()
	readers.Wait()
	for i := range subs {
		for d := range devices {
			if got := last[i][fmt.Sprint(d)]; got != rounds {
				t.Errorf("subscriber %d, device %d: last count %d, want %d", i, d, got, rounds)
			}
		}
	}
}

func TestLogsNoDeviceSecrets(t *testing.T) {
	var buf bytes.Buffer
	p := New(Config{}, providers.WithLogger(zerolog.New(&buf)))
	device := `{"endpoint":"https://push.example/x","keys":{"p256dh":"SECRETKEY","auth":"SECRETAUTH"}}`
	if err := p.Send(context.Background(), providers.Badge{Tenant: "fabrikam.com", AppID: "web", Device: device, Count: 4}); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Contains(out, "SECRET") || !strings.Contains(out, (providers.Badge{AppID: "web", Device: device}).Ref()) || !strings.Contains(out, `"count":4`) {
		t.Errorf("log line %s", out)
	}
}

func TestSendAfterCancel(t *testing.T) {
	p := New(Config{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Send(ctx, providers.Badge{Device: "a"}); !errors.Is(err, context.Canceled) || !providers.IsRetryable(err) {
		t.Errorf("Send: %v", err)
	}
	if len(p.Devices()) != 0 {
		t.Error("cancelled send recorded")
	}
}

func TestAnswers(t *testing.T) {
	providerstest.CheckAnswers(t, answers, []providerstest.Answer{
		{Status: 0, Reason: "Canceled", Want: providers.Transient},
		{Status: 410, Reason: "Unregistered", Want: providers.DeviceGone},
		{Status: 403, Reason: "InvalidProviderToken", Want: providers.AppFault},
		{Status: 401, Reason: "Unauthorized", Want: providers.AppFault},
		{Status: 429, Reason: "TooManyRequests", Want: providers.Transient},
		{Status: 503, Reason: "ServiceUnavailable", Want: providers.Transient},
		{Status: 400, Reason: "Other", Want: providers.AppFault}, // no row: an app fault
	})
}

func TestFailAndHeal(t *testing.T) {
	p := New(Config{})
	ctx := context.Background()
	tests := []struct {
		fault Fault
		class providers.Class
	}{
		{FaultAppCredentials, providers.AppFault},
		{FaultDeviceGone, providers.DeviceGone},
		{FaultUnavailable, providers.Transient},
	}
	for _, tt := range tests {
		p.Fail("app", tt.fault)
		err := p.Send(ctx, providers.Badge{AppID: "app", Device: "d", Count: 1})
		if got := providers.ClassOf(err); err == nil || got != tt.class {
			t.Errorf("Send with drill %+v: %v (%s), want %s", tt.fault, err, got, tt.class)
		}
		if err := p.Send(ctx, providers.Badge{AppID: "other", Device: "d", Count: 1}); err != nil {
			t.Errorf("another app failed during a drill: %v", err)
		}
	}
	p.Heal("app")
	if err := p.Send(ctx, providers.Badge{AppID: "app", Device: "d", Count: 2}); err != nil {
		t.Fatalf("Send after Heal: %v", err)
	}
}
