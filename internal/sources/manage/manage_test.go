package manage_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/sources/manage"
	"github.com/pushproxy/pushproxy/internal/sources/manage/managetest"
	"github.com/pushproxy/pushproxy/internal/sources/records"
)

func TestOptionsDefaults(t *testing.T) {
	retries := manage.Retries{MaxAttempts: 4, RetryWait: 2 * time.Second, MaxRetryWait: 5 * time.Minute}
	tests := []struct {
		name  string
		opts  manage.Options
		err   string // contained in the error; "" for none
		check func(o manage.Options) bool
	}{
		{"defaults", manage.Options{}, "", func(o manage.Options) bool {
			return o.Rate == manage.DefaultRate && o.Concurrency == manage.DefaultConcurrency && o.RequestTimeout == manage.DefaultRequestTimeout &&
				o.MaxAttempts == 4 && o.RetryWait == 2*time.Second && o.MaxRetryWait == 5*time.Minute && o.ErrorBackoff == manage.DefaultErrorBackoff &&
				o.MaxErrorBackoff == manage.DefaultMaxErrorBackoff && o.Client != nil && o.Now != nil && o.Sleep != nil && o.After != nil
		}},
		{"set", manage.Options{Rate: 2.5, Concurrency: 3, MaxAttempts: 1, ErrorBackoff: time.Second}, "", func(o manage.Options) bool {
			return o.Rate == 2.5 && o.Concurrency == 3 && o.MaxAttempts == 1 && o.ErrorBackoff == time.Second
		}},
		{"negative concurrency", manage.Options{Concurrency: -1}, "", func(o manage.Options) bool { return o.Concurrency == manage.DefaultConcurrency }},
		{"negative rate", manage.Options{Rate: -1}, "negative", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.opts
			err := o.Defaults(retries)
			switch {
			case tt.err != "":
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
			case err != nil:
				t.Fatal(err)
			case !tt.check(o):
				t.Fatalf("options %+v", o)
			}
		})
	}
}

// user and state are the toy source's.
type user struct{ tenant, address string }

type state struct {
	User, ID string
	N        int
}

const actMake manage.Action = 1

type entry = manage.Entry[user, state, struct{}]

type job = manage.Job[user, state, struct{}]

// toy makes a subscription for every listed user, failing for those in
// fail; Settle is the plain one (the state, stored when written).
type toy struct {
	list  *managetest.List[user]
	core  *manage.Core[user, state, struct{}, struct{}]
	made  int
	fail  map[string]bool
	gauge manage.Tally
}

func (p *toy) List(ctx context.Context) ([]user, error)      { return p.list.Users(ctx) }
func (*toy) Serves(u user) bool                              { return u.tenant != "other.example" }
func (*toy) Who(u user) (string, string)                     { return u.tenant, u.address }
func (*toy) ID(st *state) string                             { return st.ID }
func (*toy) Restore(st *state) (user, struct{})              { return user{"fabrikam.com", st.User}, struct{}{} }
func (*toy) Loaded(int, int, int)                            {}
func (*toy) Urgent(*entry) bool                              { return false }
func (*toy) Start(*entry, manage.Action, time.Time) struct{} { return struct{}{} }
func (*toy) Failed(*job, manage.Failure)                     {}
func (p *toy) Gauge(t manage.Tally, _ time.Time)             { p.gauge = t }
func (*toy) Count(t *manage.Tally, e *entry, act manage.Action, _, _ time.Time) {
	if e.Managed {
		t.Managed++
	}
	if act == actMake {
		t.Pending++
	}
}

func (*toy) Next(e *entry, _ time.Time) (manage.Action, time.Time) {
	switch {
	case e.Busy:
		return manage.None, time.Time{}
	case !e.Stored:
		return manage.Store, e.RetryAt
	case e.Managed && e.State == nil:
		return actMake, e.RetryAt
	}
	return manage.None, time.Time{}
}

func (p *toy) Perform(_ context.Context, j *job) manage.Result[state] {
	if p.fail[j.User.address] {
		return manage.Result[state]{Err: errors.New("refused")}
	}
	p.made++
	return manage.Result[state]{Changed: true, State: &state{User: j.User.address, ID: "sub-" + j.User.address, N: p.made}}
}

func (p *toy) Settle(e *entry, _ *job, res manage.Result[state], _ *state, stored bool) {
	if e != nil && res.Changed {
		p.core.Replace(e, res.State)
		e.Stored = stored
	}
}

// TestCore runs the toy source: subscriptions made and indexed, a user of
// another tenant skipped, a failure retried after the backoff, a failed
// write made again by Store without asking the mail system, a user who
// left forgotten once unsubscribed.
func TestCore(t *testing.T) {
	clock := managetest.NewClock()
	alice, bob, carol := user{"fabrikam.com", "alice"}, user{"fabrikam.com", "bob"}, user{"other.example", "carol"}
	p := &toy{list: managetest.NewList(alice, bob, carol), fail: map[string]bool{"bob": true}}
	opts := manage.Options{Now: clock.Now, After: managetest.Never, Concurrency: 1}
	if err := opts.Defaults(manage.Retries{MaxAttempts: 1, RetryWait: time.Second, MaxRetryWait: time.Second}); err != nil {
		t.Fatal(err)
	}
	memory := records.NewMemory(records.JSON("toy", errors.New("none"), errors.New("bad"), func(state) error { return nil }))
	store := managetest.NewFlakyStore[state](memory, 0)
	p.core = manage.New(manage.Config[user, state, struct{}, struct{}]{Options: opts, Store: store, ListInterval: time.Hour, Policy: p,
		Words: manage.Words{Subscriptions: "toy subscriptions", Users: "the toy users", Made: "made", ToMake: "to_make", Making: "making"}})
	c := p.core
	if err := c.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	managetest.Drain(t, c)
	find := func(id string) *entry {
		c.Lock()
		defer c.Unlock()
		return c.Find(id)
	}
	if e := find("sub-alice"); e == nil || !e.Stored || e.User != alice {
		t.Fatalf("alice's entry %+v", e)
	}
	if p.made != 1 || p.gauge.Managed != 2 || p.gauge.Pending != 1 {
		t.Fatalf("made %d, tally %+v", p.made, p.gauge)
	}
	// Bob is tried again after the backoff, while the store fails: the
	// write is made again, without a second subscription.
	p.fail["bob"] = false
	store.FailPuts(1)
	clock.Advance(manage.DefaultErrorBackoff - time.Second)
	managetest.Drain(t, c)
	if p.made != 1 {
		t.Fatalf("bob was tried before the backoff: made %d", p.made)
	}
	clock.Advance(time.Second)
	managetest.Drain(t, c)
	if e := find("sub-bob"); p.made != 2 || e == nil || e.Stored {
		t.Fatalf("bob after the backoff: made %d, entry %+v", p.made, e)
	}
	clock.Advance(2 * manage.DefaultErrorBackoff)
	managetest.Drain(t, c)
	if e := find("sub-bob"); p.made != 2 || e == nil || !e.Stored {
		t.Fatalf("bob after the second backoff: made %d, entry %+v", p.made, e)
	}
	if got, err := memory.List(context.Background()); err != nil || len(got) != 2 {
		t.Fatalf("stored %v, %v", got, err)
	}
	// Alice leaves the list: she is no longer managed, but her
	// subscription is kept until the source drops it.
	p.list.Set(bob)
	c.Relist(context.Background())
	managetest.Drain(t, c)
	if e := find("sub-alice"); e == nil || e.Managed {
		t.Fatalf("alice's entry after she left: %+v", e)
	}
	if p.gauge.Managed != 1 {
		t.Fatalf("tally %+v", p.gauge)
	}
}

func TestBackoff(t *testing.T) {
	opts := manage.Options{ErrorBackoff: time.Minute, MaxErrorBackoff: 5 * time.Minute}
	if err := opts.Defaults(manage.Retries{}); err != nil {
		t.Fatal(err)
	}
	c := manage.New(manage.Config[user, state, struct{}, struct{}]{Options: opts, Policy: &toy{}})
	for n, want := range map[int]time.Duration{1: time.Minute, 2: 2 * time.Minute, 3: 4 * time.Minute, 4: 5 * time.Minute, 40: 5 * time.Minute} {
		if got := c.Backoff(n); got != want {
			t.Errorf("Backoff(%d) = %s, want %s", n, got, want)
		}
	}
}
