package broker

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// ErrLeaseLost is the cause (context.Cause) of the end of a task's
// context when its process lost the lease: another process runs the task
// now, so it must not undo what it did (delete what it made) on its way
// out.
var ErrLeaseLost = errors.New("the lease was lost to another process")

// LeaseHolder is who holds a lease, written as the value of its key.
type LeaseHolder struct {
	// ID names the holding process: host, pid and a random suffix.
	ID    string    `json:"id"`
	Since time.Time `json:"since"`
}

// Lease is a lock on one task that one process of the deployment holds at
// a time, kept as a key of the leases bucket (BucketLeases). The holder
// renews it every third of the bucket's TTL; a holder that dies or loses
// NATS stops renewing, the key expires after the TTL, and a waiting
// process takes over. A holder that cannot renew stops its task a fifth of
// the TTL before the key can expire, so two holders never overlap (clocks
// are not compared: both sides measure the TTL from their own requests).
type Lease struct {
	kv     jetstream.KeyValue
	name   string
	holder LeaseHolder
	ttl    time.Duration
	log    zerolog.Logger
}

// OpenLease opens the lease called name in the leases bucket, for this
// process. Its TTL is the bucket's. It logs nothing until WithLog.
func OpenLease(ctx context.Context, js jetstream.JetStream, name string) (*Lease, error) {
	kv, err := js.KeyValue(ctx, BucketLeases)
	if err != nil {
		return nil, fmt.Errorf("opening bucket %s (provision the layout again): %w", BucketLeases, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading bucket %s: %w", BucketLeases, err)
	}
	if st.TTL() <= 0 {
		return nil, fmt.Errorf("bucket %s has no TTL: provision the layout again", BucketLeases)
	}
	host, _ := os.Hostname()
	return &Lease{kv: kv, name: name, ttl: st.TTL(), log: zerolog.Nop(),
		holder: LeaseHolder{ID: fmt.Sprintf("%s/%d/%s", host, os.Getpid(), rand.Text()[:8])}}, nil
}

// WithLog returns the lease logging to log.
func (l *Lease) WithLog(log zerolog.Logger) *Lease {
	c := *l
	c.log = log.With().Str("lease", l.name).Logger()
	return &c
}

// Holder is this process's identity in the lease.
func (l *Lease) Holder() string { return l.holder.ID }

// ReadLease returns who holds the lease called name; ok is false when
// nobody does.
func ReadLease(ctx context.Context, js jetstream.JetStream, name string) (h LeaseHolder, ok bool, err error) {
	kv, err := js.KeyValue(ctx, BucketLeases)
	if err != nil {
		return h, false, fmt.Errorf("opening bucket %s (provision the layout again): %w", BucketLeases, err)
	}
	e, err := kv.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return h, false, nil
	}
	if err != nil {
		return h, false, fmt.Errorf("reading lease %s: %w", name, err)
	}
	if err := json.Unmarshal(e.Value(), &h); err != nil {
		return h, false, fmt.Errorf("reading lease %s: %w", name, err)
	}
	return h, true, nil
}

// Run calls task while this process holds the lease, until ctx ends. It
// waits for the lease, then runs task with a context that ends when the
// lease is lost (another process took it, or it could not be renewed in
// time), with ErrLeaseLost as its cause; when task returns after a loss, Run waits for the lease again.
// When ctx ends Run cancels task, waits for it and releases the lease, so
// that a waiting process takes over at once. It returns nil when ctx
// ends, or task's error when task fails while holding the lease (after
// releasing it).
func (l *Lease) Run(ctx context.Context, task func(context.Context) error) error {
	for {
		rev, err := l.acquire(ctx)
		if err != nil {
			return nil // ctx ended while waiting
		}
		l.log.Info().Str("holder", l.holder.ID).Msg("took the lease: running the task")
		taskCtx, cancel := context.WithCancelCause(ctx)
		done := make(chan error, 1)
		go func() { done <- task(taskCtx) }()
		rev, lost, taskErr := l.hold(ctx, rev, done)
		if lost {
			cancel(ErrLeaseLost)
		}
		cancel(nil)
		if lost {
			<-done
			l.log.Warn().Msg("lost the lease: stopped the task; waiting to take it again")
			continue
		}
		l.release(rev)
		if ctx.Err() != nil {
			return nil
		}
		if taskErr != nil {
			return fmt.Errorf("running the task of lease %s: %w", l.name, taskErr)
		}
		return nil
	}
}

// acquire waits until the key can be created, polling every third of
// the TTL, and returns its revision. It logs who holds it the first time
// and whenever the holder changes. It fails only when ctx ends.
func (l *Lease) acquire(ctx context.Context) (uint64, error) {
	var seen string
	for {
		h := l.holder
		h.Since = time.Now().UTC()
		body, _ := json.Marshal(h)
		rev, err := l.kv.Create(ctx, l.name, body)
		if err == nil {
			l.holder = h
			return rev, nil
		}
		switch {
		case errors.Is(err, jetstream.ErrKeyExists):
			if e, gerr := l.kv.Get(ctx, l.name); gerr == nil && string(e.Value()) != seen {
				seen = string(e.Value())
				l.log.Info().RawJSON("held_by", e.Value()).Msg("another process holds the lease: standing by")
			}
		case ctx.Err() == nil:
			l.log.Warn().Err(err).Msg("could not take the lease; trying again")
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(l.ttl / 3):
		}
	}
}

// hold renews the lease every third of the TTL until task ends (done),
// ctx ends, or the lease is lost: another process took it, or a fifth of
// the TTL is all that is left since the last renewal that succeeded (a
// timer, so that a process resumed after a long pause stops the task as
// soon as it runs again). It returns the last revision, whether the lease
// was lost, and task's error when task ended.
func (l *Lease) hold(ctx context.Context, rev uint64, done <-chan error) (uint64, bool, error) {
	body, _ := json.Marshal(l.holder)
	keep := l.ttl - l.ttl/5
	renewed := time.Now() // when the last renewal that succeeded was sent
	expire := time.NewTimer(keep)
	defer expire.Stop()
	tick := time.NewTicker(l.ttl / 3)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return rev, false, err
		case <-ctx.Done():
			<-done
			return rev, false, nil
		case <-expire.C:
			l.log.Error().Msg("could not renew the lease before it could expire")
			return rev, true, nil
		case <-tick.C:
		}
		sent := time.Now()
		rctx, cancel := context.WithDeadline(ctx, renewed.Add(keep))
		next, err := l.kv.Update(rctx, l.name, body, rev)
		cancel()
		switch {
		case err == nil:
			rev, renewed = next, sent
			expire.Reset(time.Until(renewed.Add(keep)))
		case ctx.Err() != nil:
			<-done
			return rev, false, nil
		case isWrongRevision(err):
			if mine, ok := l.ownRevision(ctx); ok {
				rev = mine // an earlier renewal was stored but its answer lost
				continue
			}
			l.log.Error().Err(err).Msg("the lease was taken by another process")
			return rev, true, nil
		default:
			l.log.Warn().Err(err).Msg("could not renew the lease; trying again")
		}
	}
}

// ownRevision is the key's revision when its value is still this
// holder's.
func (l *Lease) ownRevision(ctx context.Context) (uint64, bool) {
	e, err := l.kv.Get(ctx, l.name)
	if err != nil {
		return 0, false
	}
	var h LeaseHolder
	if json.Unmarshal(e.Value(), &h) != nil || h.ID != l.holder.ID {
		return 0, false
	}
	return e.Revision(), true
}

// release deletes the key if it still is this holder's, so that a
// waiting process need not wait for the TTL. rev is the last revision hold
// knows of; a renewal cut short by the end of Run's context may still have
// been stored, so on a revision mismatch the key's own value decides.
func (l *Lease) release(rev uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := l.kv.Delete(ctx, l.name, jetstream.LastRevision(rev))
	if isWrongRevision(err) {
		if mine, ok := l.ownRevision(ctx); ok {
			err = l.kv.Delete(ctx, l.name, jetstream.LastRevision(mine))
		}
	}
	if err != nil {
		l.log.Warn().Err(err).Msg("could not release the lease; another process takes it when it expires")
		return
	}
	l.log.Info().Msg("released the lease")
}

// isWrongRevision reports whether err is JetStream refusing an update
// because the key changed.
func isWrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}
