// Package delivery is the one path from a batch of notifications to the
// relay and back: it sends the batch, reads the relay's answer device by
// device in the protocol's fault classes (see internal/relayproto), and
// applies it. The dispatcher, dead-letter redrive, replay and the
// connectivity probe all go through it.
//
// What each class does:
//
//   - delivered: the push is recorded in stream PUSH_SENT (RecordSent).
//   - device gone, with a verdict newer than the subscription: that
//     subscription is removed and a tombstone (reason, time, the whole
//     record) is kept in KV bucket tombstones for 7 days, so that
//     Restore (pushctl subscriptions restore, pushctl dlq redrive) can
//     undo a wrong verdict. A verdict older than the subscription keeps it.
//   - app or credential fault: no subscription is touched; the tenant+app
//     breaker (Breakers) counts it, opens after a few pushes in a row that
//     reached no device of that app, and pauses sending for that tenant+app
//     only. After a cool-down one trial push goes through; a delivery
//     closes the breaker. The metric pushproxy_delivery_app_paused names
//     the tenant and app while paused (alert PushproxyAppPaused).
//   - transient: retried with github.com/cenkalti/backoff/v4 (exponential,
//     jittered, capped) within a retry budget (Policy).
//
// Time spent waiting on an open breaker (the relay client's or a
// tenant+app one) or on a back-off the relay asked for (429, Retry-After,
// BackOffTimeInMilliseconds) does not use up the budget: the budget clock
// stops while we wait on back-pressure, so back-pressure never produces a
// dead letter (DeadLetter is for the truly undeliverable).
//
// The proxy Uri is read again before every attempt: when an operator
// changes it, the next attempt of every retrying request goes to the new
// relay, and the relay client's breaker is reset.
package delivery
