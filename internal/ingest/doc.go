// Package ingest is the HTTP server through which mail systems report
// mailbox changes. It authenticates each source, turns what it sends into
// events.Event values, and publishes them to the MAIL stream with a
// deduplication id (Nats-Msg-Id), answering 2xx only once JetStream has
// acknowledged every event of the request. The wire formats and answers are
// documented in API.md beside this file.
//
// # Request pipeline
//
// Every source route runs the same steps, so a new source only parses:
//
//	instrument (metrics, log) → RequireAuth (401) → RequireMediaType (415)
//	→ LimitBody (413) → ReadBody → Source.Parse (400/413/422)
//	→ complete + Normalize + Validate each event (422: nothing published)
//	→ Publisher.Publish, async, wait for all acks (503 + Retry-After)
//	→ Source.Respond or the JSON Result (200)
//
// # Adding a source
//
// A source is a parser in its own package (internal/sources/<name>) that
// returns []parse.Item, plus a Source value registered on the server:
//
//	srv.HandleSource(ingest.Source{
//		Name:       events.SourceGraph,
//		Patterns:   []string{"POST /v1/graph"},
//		Auth:       ingest.NewBearer(token),
//		MediaTypes: []string{"application/json"},
//		Parse: func(r *http.Request, body []byte) ([]parse.Item, error) {
//			return graph.Parse(body)
//		},
//		Respond: func(w http.ResponseWriter, r *http.Request, res *ingest.Result) {
//			w.WriteHeader(http.StatusAccepted)
//		},
//	})
//
// Parse leaves Tenant empty when the source does not know it (ingest then
// takes the user's domain or the default tenant) and sets a ChangeID that is
// the same when the source sends the same change again. Respond lets a
// source answer in its own protocol (an EWS SendNotificationResult, Graph's
// 202); errors are always ingest's JSON errors. A handshake that is not an
// event delivery (Graph's validationToken) goes in a wrapper that answers
// it before calling the source's handler:
//
//	srv.Handle("POST /v1/graph", graph.Handshake(srv.SourceHandler(src)))
//
// # Adding other routes
//
// Server.Handle adds any handler, e.g. the device subscriptions API under
// /v1/subscriptions. It can reuse the middleware:
//
//	srv.Handle("POST /v1/subscriptions", ingest.Chain(h,
//		ingest.RequireAuth(ingest.NewBearer(token)),
//		ingest.RequireMediaType("application/json"),
//		ingest.LimitBody(64<<10)))
//
// and answer errors with Reject. Run takes such additions as Extension
// functions, so cmd/ingest and pushctl standalone wire them the same way.
package ingest
