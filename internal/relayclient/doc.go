// Package relayclient is the on-premises side of the relay protocol: the
// client that the dispatcher, the connectivity probe and dead-letter redrive
// use to publish notifications to the relay.
//
// A publish is one POST of a batch of [relayproto.Notification] to
// {Uri}/service.svc/PublishOnPremNotifications with a bearer S2S token, a
// random client-request-id and return-client-request-id: True, the way
// Exchange's on-premises publisher did it.
//
// Failures are values: every failure of a request is an [*Error] with a
// [Class] (Authentication, Networking, PushNotifications, Throttled, Server,
// Unknown), the HTTP status, the relay's [relayproto.Fault], its back-off
// hint and the client-request-id, and it matches the sentinels
// [ErrUnauthorized], [ErrUnreachable], [ErrPermanent] and [ErrCircuitOpen]
// with errors.Is. [Classify] turns any error into the probe's four classes
// and a message that tells the operator what to fix.
//
// A Client makes one attempt per Publish: retries, with their back-off
// policy, belong to the delivery path (internal/delivery), the one place
// that decides what waiting counts toward a notification's retry budget.
// Within an attempt, a request that never went out (its connection could
// not be made) is sent again at once, up to twice: the relay never saw it.
//
// The default client finds out a relay that hangs (a replica its host
// stopped, whose kernel still accepts connections): an HTTP/2 connection
// silent for [PingAfter] is pinged and closed when the ping goes
// unanswered as long, and a TLS handshake gives up after twice as long.
//
// A Client has one circuit breaker for all the URIs it talks to: a
// deployment publishes to one relay, so one breaker per client is per relay.
// After a run of consecutive temporary failures it opens and Publish fails
// fast with [ErrCircuitOpen]; after a cool-down, which grows each time the
// breaker opens again, one trial request goes through, and a success closes
// it. [Client.Healthy] and [Client.BreakerOpenUntil] let the dispatcher stop
// taking work while the relay is down, and [Client.State] feeds a metric.
package relayclient
