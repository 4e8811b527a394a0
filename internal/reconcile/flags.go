package reconcile

import "flag"

// Flags registers the reconciler's schedule flags on fs and returns the
// Config they fill; the caller adds the connection, the counters, the
// mailbox, the log and the metrics.
func Flags(fs *flag.FlagSet) *Config {
	c := &Config{}
	fs.DurationVar(&c.EstimatedDelay, "reconcile-estimated-delay", DefaultEstimatedDelay, "how soon a user whose event carried no count (an estimate: Dovecot OX driver, Graph, EWS without a count) is checked against the mail system; negative: never")
	fs.DurationVar(&c.SweepPeriod, "reconcile-sweep-period", DefaultSweepPeriod, "how long one pass over every user with a device subscription takes, spread evenly; negative: no sweep")
	fs.Float64Var(&c.Rate, "reconcile-rate", DefaultRate, "most checks per second against each mail system (counter), across estimated checks, the sweep and pushctl reconcile")
	fs.DurationVar(&c.FollowUp, "reconcile-follow-up", DefaultFollowUp, "after an event from a source that never reports reads (Dovecot's OX driver alone), check its user every --reconcile-estimated-delay for this long while unread mail is left, so reads lower the badge (a restart reads this much of the stream again to keep following them); negative: never")
	fs.DurationVar(&c.RetryDelay, "reconcile-retry-delay", DefaultRetryDelay, "wait before checking again a user whose events were still being applied, or who got an event during the check; a user is tried 6 times, so keep 6 times this above the dispatcher's --max-delay (10s), which is how long an event may wait to be applied and settled")
	fs.IntVar(&c.MaxQueued, "reconcile-max-queued", DefaultMaxQueued, "most users waiting for an estimated check; beyond, the sweep checks them")
	return c
}
