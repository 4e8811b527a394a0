// Package reconcile heals badges: it asks the mail system (a
// sources.Counter: doveadm, IMAP, Graph, EWS) for a user's true unseen
// count and, when the state the dispatcher keeps differs, publishes the
// truth as an authoritative snapshot event to the MAIL stream. The
// dispatcher applies it like any event, so ordering, coalescing and pushing
// stay in one place.
//
// A snapshot must never overwrite a newer count. Before reading the truth
// the reconciler notes the sequence of the user's last stored event; the
// snapshot is published with that sequence as the expected last sequence of
// the user's subject, so JetStream refuses it when any event of the user
// arrived meanwhile (outcome Raced: checked again later). It also waits
// until the dispatcher has applied that last event (outcome Behind), so
// that the state it compares with is the state the devices were pushed.
//
// Three triggers feed the same Check:
//   - estimated counts: a user whose event carried no count (a delta: OX
//     driver, Graph, EWS without a count) is checked within EstimatedDelay
//     of that event (Watch reads the MAIL stream);
//   - the sweep: every user with a subscription, spread over SweepPeriod;
//   - on demand: requests on SubjectCheck (pushctl reconcile).
//
// Each counter is rate-limited (Rate checks per second) across all three.
package reconcile
