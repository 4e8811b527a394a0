package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/pushproxy/pushproxy/internal/events"
)

// SubjectCheck is where checks are asked for on demand (pushctl
// reconcile): a CheckRequest, answered with a CheckResponse by one of the
// running reconcilers (queue group QueueGroup).
const (
	SubjectCheck = "pushproxy.reconcile.check"
	QueueGroup   = "reconcile"
)

// requestTimeout bounds one on-demand check, rate-limit waits included.
const requestTimeout = 2 * time.Minute

// maxConcurrentRequests bounds the on-demand checks running at once.
const maxConcurrentRequests = 4

// CheckRequest asks for a check of up to MaxBatch users.
type CheckRequest struct {
	Users []User `json:"users"`
}

// CheckResponse answers a CheckRequest: one Result per user, in order, or
// the reason the request was refused.
type CheckResponse struct {
	Results []Result `json:"results,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// ErrNoReconciler is Ask's error when no reconciler is running.
var ErrNoReconciler = errors.New("no reconciler is running (start cmd/reconciler, or pushctl standalone with a counter such as --doveadm-url)")

// validate checks the request's users and normalises their tenants.
func (req *CheckRequest) validate() error {
	if len(req.Users) == 0 || len(req.Users) > MaxBatch {
		return fmt.Errorf("users: want 1 to %d, got %d", MaxBatch, len(req.Users))
	}
	for i := range req.Users {
		e := events.Event{Tenant: req.Users[i].Tenant, User: req.Users[i].User}
		e.Normalize()
		if err := events.ValidateTenant(e.Tenant); err != nil {
			return fmt.Errorf("users[%d]: %w", i, err)
		}
		if err := events.ValidateAddress("user", e.User); err != nil {
			return fmt.Errorf("users[%d]: %w", i, err)
		}
		req.Users[i] = User{Tenant: e.Tenant, User: e.User}
	}
	return nil
}

// serve answers on-demand checks until ctx ends.
func (r *Reconciler) serve(ctx context.Context) error {
	slots := make(chan struct{}, maxConcurrentRequests)
	sub, err := r.cfg.NC.QueueSubscribe(SubjectCheck, QueueGroup, func(msg *nats.Msg) {
		var req CheckRequest
		if err := json.Unmarshal(msg.Data, &req); err != nil {
			respond(msg, CheckResponse{Error: "malformed request: " + err.Error()})
			return
		}
		if err := req.validate(); err != nil {
			respond(msg, CheckResponse{Error: err.Error()})
			return
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		go func() {
			defer func() { <-slots }()
			cctx, cancel := context.WithTimeout(ctx, requestTimeout)
			defer cancel()
			respond(msg, CheckResponse{Results: r.Check(cctx, TriggerRequest, req.Users)})
		}()
	})
	if err != nil {
		return fmt.Errorf("subscribing to %s: %w", SubjectCheck, err)
	}
	<-ctx.Done()
	return sub.Unsubscribe()
}

func respond(msg *nats.Msg, resp CheckResponse) {
	data, err := json.Marshal(resp)
	if err != nil {
		data = []byte(`{"error":"encoding the answer failed"}`)
	}
	_ = msg.Respond(data)
}

// Ask asks a running reconciler to check users (at most MaxBatch) and
// returns its results.
func Ask(ctx context.Context, nc *nats.Conn, users []User) ([]Result, error) {
	data, err := json.Marshal(CheckRequest{Users: users})
	if err != nil {
		return nil, fmt.Errorf("encoding the check request: %w", err)
	}
	msg, err := nc.RequestWithContext(ctx, SubjectCheck, data)
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, ErrNoReconciler
	}
	if err != nil {
		return nil, fmt.Errorf("asking the reconciler: %w", err)
	}
	var resp CheckResponse
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, fmt.Errorf("decoding the reconciler's answer: %w", err)
	}
	if resp.Error != "" {
		return nil, fmt.Errorf("the reconciler refused the request: %s", resp.Error)
	}
	if len(resp.Results) != len(users) {
		return nil, fmt.Errorf("the reconciler answered %d results for %d users", len(resp.Results), len(users))
	}
	return resp.Results, nil
}
