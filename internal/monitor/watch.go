package monitor

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/alerting"
	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/pushlog"
)

// watcher turns the new messages of one stream into alert signals.
type watcher struct {
	name    string
	stream  string
	subject string
	// signal returns the signal a message raises, if any.
	signal func(data []byte) (alerting.Signal, bool)
}

// watch follows the messages stored in w.stream from now on with an
// ordered consumer and feeds their signals to alerts until ctx ends.
// Messages stored while the monitor was down are not seen: a monitor that
// restarts starts with a clean slate.
func watch(ctx context.Context, js jetstream.JetStream, w watcher, alerts *alerting.Manager, seen *prometheus.CounterVec, log zerolog.Logger) error {
	cons, err := js.OrderedConsumer(ctx, w.stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{w.subject}, DeliverPolicy: jetstream.DeliverNewPolicy,
	})
	if err != nil {
		return fmt.Errorf("watching stream %s: %w", w.stream, err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		seen.WithLabelValues(w.name).Inc()
		if w.signal == nil {
			return
		}
		sig, ok := w.signal(msg.Data())
		if !ok {
			return
		}
		if err := alerts.Observe(sig); err != nil {
			log.Error().Err(err).Str("watch", w.name).Msg("alert rule missing")
		}
	}, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		log.Debug().Err(err).Str("watch", w.name).Msg("watch interrupted; resuming")
	}))
	if err != nil {
		return fmt.Errorf("watching stream %s: %w", w.stream, err)
	}
	<-ctx.Done()
	cc.Stop()
	return nil
}

// watchers are the streams the monitor follows for alerts.
func watchers() []watcher {
	return []watcher{
		// Dead letters are counted here; their alert follows how many
		// wait (deadLetterCheck), not how many arrive.
		{name: "dead_letters", stream: broker.StreamDead, subject: broker.SubjectDead + ".>"},
		{name: "advisories", stream: broker.StreamAdvisories, subject: ">", signal: advisorySignal},
		{name: "pushes", stream: broker.StreamSent, subject: broker.SubjectSent + ".>", signal: prunedSignal},
	}
}

// deadLetterCheck reads how many dead letters wait in PUSH_DEAD and
// whether the latest one says what went wrong: RuleDeadLetters fails
// while any waits and passes once they are redriven or discarded.
func deadLetterCheck(ctx context.Context, js jetstream.JetStream, pending prometheus.Gauge) (alerting.Signal, error) {
	// Looking the stream up reads its info: one request gives the count.
	stream, err := js.Stream(ctx, broker.StreamDead)
	if err != nil {
		return alerting.Signal{}, fmt.Errorf("reading stream %s: %w", broker.StreamDead, err)
	}
	n := stream.CachedInfo().State.Msgs
	pending.Set(float64(n))
	sig := alerting.Signal{Rule: alerting.RuleDeadLetters, Failing: n > 0}
	if n == 0 {
		return sig, nil
	}
	sig.Detail = fmt.Sprintf("%d dead letter(s) wait in %s", n, broker.StreamDead)
	if last, err := stream.GetLastMsgForSubject(ctx, broker.SubjectDead+".>"); err == nil {
		var dl pushlog.DeadLetter
		if json.Unmarshal(last.Data, &dl) == nil {
			// The tenant and the reason, never the user.
			sig.Detail += fmt.Sprintf("; the latest for tenant %s (reason %s, %d attempts): %s",
				dl.Tenant, dl.Reason, dl.Attempts, truncate(dl.LastError, 300))
		}
	}
	return sig, nil
}

// advisory is the part of the MAX_DELIVERIES and MSG_TERMINATED advisories
// (io.nats.jetstream.advisory.v1.max_deliver and .terminated) the monitor
// reads.
type advisory struct {
	Type       string `json:"type"`
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
	Reason     string `json:"reason"`
}

// advisorySignal is one occurrence of RuleEventsAbandoned.
func advisorySignal(data []byte) (alerting.Signal, bool) {
	var a advisory
	if err := json.Unmarshal(data, &a); err != nil {
		return alerting.Signal{}, false
	}
	what := "gave up on"
	switch {
	case strings.HasSuffix(a.Type, ".max_deliver"):
		what = fmt.Sprintf("reached max deliveries (%d) on", a.Deliveries)
	case strings.HasSuffix(a.Type, ".terminated"):
		what = "terminated"
	}
	detail := fmt.Sprintf("consumer %s %s %s event %d", a.Consumer, what, a.Stream, a.StreamSeq)
	if a.Reason != "" {
		detail += ": " + truncate(a.Reason, 300)
	}
	return alerting.Signal{Rule: alerting.RuleEventsAbandoned, Detail: detail + "; see pushctl replay for the user"}, true
}

// prunedSignal counts the device subscriptions a push removed: the
// devices the relay reported gone or rejected.
func prunedSignal(data []byte) (alerting.Signal, bool) {
	var rec pushlog.SentRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return alerting.Signal{}, false
	}
	n := rec.Gone + rec.Rejected
	if n == 0 {
		return alerting.Signal{}, false
	}
	return alerting.Signal{Rule: alerting.RuleSubscriptionsPruned, Count: n, Detail: fmt.Sprintf(
		"device subscriptions are being removed: the latest push for tenant %s lost %d gone and %d rejected device(s)", rec.Tenant, rec.Gone, rec.Rejected)}, true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
