package graph

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// call sends one management request (body, when not nil, as JSON) at
// most Rate a second. A throttling answer (429, 503, 504) holds every
// request of the Manager for the wait Graph names in Retry-After (or
// RetryWait, doubling), up to MaxAttempts; a 401 gets a new token once.
// Any other answer (at most MaxSubscriptionAnswer long) is returned as it
// is. what names the request.
func (m *Manager) call(ctx context.Context, method, url string, body any, what string) (httpAnswer, error) {
	return m.callLimit(ctx, method, url, body, MaxSubscriptionAnswer, what)
}

// callLimit is call with answers up to limit bytes long.
func (m *Manager) callLimit(ctx context.Context, method, url string, body any, limit int, what string) (httpAnswer, error) {
	var data []byte
	if body != nil {
		var err error
		if data, err = json.Marshal(body); err != nil {
			return httpAnswer{}, fmt.Errorf("encoding %s: %w", what, err)
		}
	}
	reauthorized := false
	for attempt := 1; ; attempt++ {
		if err := m.gate(ctx); err != nil {
			return httpAnswer{}, fmt.Errorf("waiting to send %s: %w", what, err)
		}
		// A request that was sent is finished even when ctx ends: Graph
		// may act on it, and its answer must be kept.
		reqCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.RequestTimeout)
		ans, err := m.http.do(reqCtx, method, url, data, limit, what)
		cancel()
		if err != nil {
			return httpAnswer{}, err
		}
		switch {
		case isThrottle(ans.status):
			last := apiError(ans.status, ans.body)
			if attempt >= m.cfg.MaxAttempts {
				return httpAnswer{}, fmt.Errorf("%s: %w after %d attempts: %w", what, ErrThrottled, attempt, last)
			}
			wait := m.http.waitFor(ans.header.Get("Retry-After"), attempt)
			if wait > m.cfg.MaxRetryWait {
				return httpAnswer{}, fmt.Errorf("%s: %w: Graph asks to wait %s (at most %s): %w", what, ErrThrottled, wait, m.cfg.MaxRetryWait, last)
			}
			m.cfg.Log.Debug().Str("request", what).Int("status", ans.status).Dur("wait", wait).Int("attempt", attempt).
				Msg("Graph throttled the subscription manager")
			m.pause(wait)
			continue
		case ans.status == http.StatusUnauthorized && !reauthorized && m.http.canForget():
			// The token may have been revoked before it expired: ask for a
			// new one, once.
			m.http.forget(ans.token)
			reauthorized = true
			attempt--
			continue
		}
		return ans, nil
	}
}

// gate waits while Graph asked to, then for the rate limit.
func (m *Manager) gate(ctx context.Context) error {
	m.pauseMu.Lock()
	d := m.pauseUntil.Sub(m.cfg.Now())
	m.pauseMu.Unlock()
	if d > 0 {
		if err := m.http.wait(ctx, d); err != nil {
			return err
		}
	}
	return m.core.Wait(ctx)
}

// pause holds every request for d from now.
func (m *Manager) pause(d time.Duration) {
	m.pauseMu.Lock()
	defer m.pauseMu.Unlock()
	if until := m.cfg.Now().Add(d); until.After(m.pauseUntil) {
		m.pauseUntil = until
	}
}
