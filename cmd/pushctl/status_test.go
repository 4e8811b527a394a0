package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/dispatcher"
)

func TestStatus(t *testing.T) {
	conn, url := startNATS(t)

	r := pushctl(t, "status", "--listen", "10ms", url)
	if r.code != 0 || !strings.Contains(r.stdout, "MAIL") || !strings.Contains(r.stdout, "No dispatcher workers heard") ||
		!strings.Contains(r.stdout, "Last connectivity probe: none yet") || !strings.Contains(r.stdout, "No ingest answered.") {
		t.Fatalf("status before anything runs: %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- dispatcher.Run(ctx, dispatcher.Config{Tokens: staticTokens{}, InstanceID: "worker-a"}, conn, zerolog.Nop(), nil)
	}()
	t.Cleanup(func() { cancel(); <-done })
	if r := pushctl(t, "probe", url); r.code != 1 {
		t.Fatalf("probe with the proxy disabled: %d", r.code)
	}

	// The dispatcher announces itself every second; poll until it owns
	// every partition of the default layout (8).
	deadline := time.Now().Add(60 * time.Second)
	for {
		r = pushctl(t, "status", "--json", url)
		var rep statusReport
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
			t.Fatalf("status --json: %v\n%s", err, r.stdout)
		}
		if len(rep.Workers) == 1 && len(rep.Workers[0].Partitions) == 8 && len(rep.Consumers) >= 8 {
			if rep.Workers[0].ID != "worker-a" || rep.Probe == nil || rep.Probe.Class != "PushNotifications" {
				t.Fatalf("status: %+v", rep)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dispatcher never showed up with 8 partitions:\n%s", r.stdout)
		}
	}

	// A dispatcher that hears nothing from NATS says so in its heartbeats.
	deaf, _ := json.Marshal(dispatcher.Announcement{ID: "worker-b", Owns: []int{3}, Deaf: true})
	stopDeaf := make(chan struct{})
	deafDone := make(chan struct{})
	go func() {
		defer close(deafDone)
		for {
			_ = conn.NC.Publish(dispatcher.DefaultMembershipSubject, deaf)
			select {
			case <-stopDeaf:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	r = pushctl(t, "status", "--listen", "1s", url)
	close(stopDeaf)
	<-deafDone
	for _, re := range []string{
		`(?m)^worker-b +3  \(deaf: hears nothing from NATS, pushes nothing; the others take its partitions\)$`,
		`(?m)^MAIL +0 +\d+ +8 `,
		`(?m)^MAIL +dispatcher-p0 +mail\.0\.> +0 +0 +0 `,
		`(?m)^worker-a +0,1,2,3,4,5,6,7$`,
		`(?m)^Last connectivity probe: Failed at .* \(PushNotifications\): Push Notifications settings could not be found`,
	} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("status lacks %s:\n%s", re, r.stdout)
		}
	}
}

// staticTokens is a token source for a dispatcher that never pushes.
type staticTokens struct{}

func (staticTokens) Token(context.Context) (string, error) { return "unused", nil }
