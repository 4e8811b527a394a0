package ingest

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/httpjson"
	"github.com/pushproxy/pushproxy/internal/sources/ews"
	"github.com/pushproxy/pushproxy/internal/sources/graph"
)

// recordingManager stands in for the EWS and Graph managers: it knows one
// subscription, refuses lifecycle bodies that say "refuse", and records
// what it is handed.
type recordingManager struct {
	mu   sync.Mutex
	seen []string
}

func (r *recordingManager) record(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, s)
}

func (r *recordingManager) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen)
}

func (r *recordingManager) Lookup(_ context.Context, id string) (ews.Subscription, error) {
	if id == "known" {
		return ews.Subscription{Tenant: "fabrikam.com", User: "alice@fabrikam.com", InboxFolderID: "inbox-1"}, nil
	}
	return ews.Subscription{}, ews.ErrUnknownSubscription
}

func (r *recordingManager) Observe(_ context.Context, id, watermark string, _ time.Time) {
	r.record("observe " + id + " " + watermark)
}

func (r *recordingManager) OnSubscriptionError(_ context.Context, se ews.SubscriptionError) {
	r.record("error " + se.SubscriptionID + " " + se.ResponseCode)
}

func (r *recordingManager) Lifecycle(_ context.Context, body []byte) error {
	if string(body) == "refuse" {
		return &httpjson.Error{Status: http.StatusUnauthorized, Code: "unauthorized", Field: "clientState", Message: "no lifecycle notification carries a known clientState"}
	}
	r.record("lifecycle " + string(body))
	return nil
}

func (r *recordingManager) OnLifecycle(_ context.Context, l graph.Lifecycle) {
	r.record("lifecycle-seen " + l.Event + " " + l.SubscriptionID)
}

func (r *recordingManager) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}

// TestStandbyHandsNotificationsToTheHolder runs two ingests' views of
// one manager, each on its own connection: the one that stands by hands
// lookups, stored notifications and lifecycle notifications to the
// holder; with no holder it answers "retry later".
func TestStandbyHandsNotificationsToTheHolder(t *testing.T) {
	conn := brokertest.Start(t, brokertest.WithListen())
	connect := func() *broker.Conn {
		c, err := broker.Connect(context.Background(), broker.Options{URLs: []string{conn.ClientURL()}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	holderConn, standbyConn := connect(), connect()
	holder := &recordingManager{}
	ewsHolder := &ewsManaged{managed: managed{nc: holderConn.NC, log: zerolog.Nop()}, m: holder}
	graphHolder := &graphManaged{managed: managed{nc: holderConn.NC, log: zerolog.Nop()}, m: holder}
	standby := &recordingManager{}
	ewsStandby := &ewsManaged{managed: managed{nc: standbyConn.NC, log: zerolog.Nop()}, m: standby}
	graphStandby := &graphManaged{managed: managed{nc: standbyConn.NC, log: zerolog.Nop()}, m: standby}
	ctx := context.Background()

	// Nobody holds the lease: retry later, never "unknown".
	if _, err := ewsStandby.Lookup(ctx, "known"); !errors.Is(err, ews.ErrNotReady) || errors.Is(err, ews.ErrUnknownSubscription) {
		t.Fatalf("lookup without a holder: %v", err)
	}
	var se *httpjson.Error
	if err := graphStandby.Lifecycle(ctx, []byte("body")); !errors.As(err, &se) || se.Status != http.StatusServiceUnavailable {
		t.Fatalf("lifecycle without a holder: %v", err)
	}

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 2)
	go func() { done <- ewsHolder.run()(runCtx) }()
	go func() { done <- graphHolder.run()(runCtx) }()
	for !ewsHolder.held.Load() || !graphHolder.held.Load() {
		time.Sleep(time.Millisecond)
	}
	if err := holderConn.NC.Flush(); err != nil {
		t.Fatal(err)
	}

	sub, err := ewsStandby.Lookup(ctx, "known")
	if err != nil || sub.User != "alice@fabrikam.com" || sub.InboxFolderID != "inbox-1" {
		t.Fatalf("lookup through the holder: %+v %v", sub, err)
	}
	if _, err := ewsStandby.Lookup(ctx, "other"); !errors.Is(err, ews.ErrUnknownSubscription) {
		t.Fatalf("unknown through the holder: %v", err)
	}
	ewsStandby.Observe(ctx, "known", "wm-7", time.Now())
	ewsStandby.OnSubscriptionError(ctx, ews.SubscriptionError{SubscriptionID: "known", ResponseCode: "ErrorReadEventsFailed"})
	graphStandby.OnLifecycle(ctx, graph.Lifecycle{Event: "missed", SubscriptionID: "g-1"})
	if err := graphStandby.Lifecycle(ctx, []byte("body")); err != nil {
		t.Fatalf("lifecycle through the holder: %v", err)
	}
	if err := graphStandby.Lifecycle(ctx, []byte("refuse")); !errors.As(err, &se) || se.Status != http.StatusUnauthorized || se.Field != "clientState" {
		t.Fatalf("the holder's refusal: %v", err)
	}
	want := []string{"error known ErrorReadEventsFailed", "lifecycle body", "lifecycle-seen missed g-1", "observe known wm-7"}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		got := holder.got()
		slices.Sort(got)
		if slices.Equal(got, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the holder was handed %q, want %q", got, want)
		}
	}
	if got := standby.got(); len(got) != 0 {
		t.Fatalf("the standby's own manager was handed %q", got)
	}

	// The holder stops: it no longer answers, and says it does not hold.
	stop()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if ewsHolder.held.Load() || graphHolder.held.Load() {
		t.Fatal("still held after the task ended")
	}
	if _, err := ewsStandby.Lookup(ctx, "known"); !errors.Is(err, ews.ErrNotReady) {
		t.Fatalf("lookup after the holder stopped: %v", err)
	}
}
