package imap

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/service"
)

// Outcomes of publishing a snapshot, the outcome label of
// pushproxy_imap_events_total.
const (
	outcomePublished = "published"
	outcomeFailed    = "failed"
)

// watchMetrics are the metrics of the IMAP watcher.
type watchMetrics struct {
	watched    prometheus.Gauge
	connected  prometheus.Gauge
	reconnects *prometheus.CounterVec
	events     *prometheus.CounterVec
}

// newWatchMetrics makes the watcher's metrics and registers them on reg
// when it is not nil.
func newWatchMetrics(reg prometheus.Registerer) (*watchMetrics, error) {
	m := &watchMetrics{
		watched: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pushproxy_imap_watched_users",
			Help: "Users whose IMAP mailbox the watcher watches with IDLE, one connection each.",
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pushproxy_imap_connected_users",
			Help: "Watched users whose IMAP connection is logged in with the mailbox open (the rest are connecting or waiting to reconnect).",
		}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_imap_reconnects_total",
			Help: "Watched users' IMAP connections that ended and are reconnected, by reason: bye (the server said BYE), dropped (the connection broke), timeout (no answer in time), login (the server refused the login; retried after a longer back-off), error (a command refused or an unreadable answer).",
		}, []string{"reason"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushproxy_imap_events_total",
			Help: "Unread count snapshots the IMAP watcher handed to the publish path, by outcome: published (stored) or failed (not stored; each failed attempt counts, and the snapshot is kept and tried again).",
		}, []string{"outcome"}),
	}
	for _, r := range reconnectReasons() {
		m.reconnects.WithLabelValues(r)
	}
	for _, o := range []string{outcomePublished, outcomeFailed} {
		m.events.WithLabelValues(o)
	}
	if err := service.Register(reg, "IMAP watcher", m.watched, m.connected, m.reconnects, m.events); err != nil {
		return nil, err
	}
	return m, nil
}
