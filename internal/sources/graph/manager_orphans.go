package graph

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// MaxSubscriptionListAnswer bounds one page of GET /subscriptions.
const MaxSubscriptionListAnswer = 4 << 20

// maxListPages bounds the pages one orphan sweep reads.
const maxListPages = 1000

// listedSubscription is one subscription of a GET /subscriptions page.
type listedSubscription struct {
	ID              string `json:"id"`
	Resource        string `json:"resource"`
	NotificationURL string `json:"notificationUrl"`
}

// subscriptionPage is one page of GET /subscriptions.
type subscriptionPage struct {
	Value    []listedSubscription `json:"value"`
	NextLink string               `json:"@odata.nextLink"`
}

// sweepOrphans deletes the subscriptions Graph holds for this manager's
// notification endpoint (any key: the URL without its query) that the
// manager does not keep: one created just before a crash or a lost lease
// and never recorded, one left by an older key or a store that was lost.
// Each would send changes twice, and Graph counts it against the
// mailbox's subscription limit. It must run while no operation is in
// flight (Run's loop, between dispatches), so that a subscription being
// created is never taken for an orphan. It returns how many it deleted.
func (m *Manager) sweepOrphans(ctx context.Context) (int, error) {
	listed, err := m.listSubscriptions(ctx)
	if err != nil {
		return 0, err
	}
	ours := endpointOf(m.cfg.NotificationURL)
	m.core.Lock()
	if m.core.InFlight() > 0 {
		m.core.Unlock()
		return 0, nil
	}
	var orphans []listedSubscription
	for _, s := range listed {
		if endpointOf(s.NotificationURL) != ours {
			continue
		}
		if m.core.Find(s.ID) != nil {
			continue
		}
		orphans = append(orphans, s)
	}
	m.core.Unlock()
	deleted := 0
	for _, s := range orphans {
		ans, err := m.call(ctx, http.MethodDelete, m.subscriptionsURL+"/"+url.PathEscape(s.ID), nil, "DELETE /subscriptions of an orphan")
		if err == nil && !deletedStatus(ans.status) {
			err = apiError(ans.status, ans.body)
		}
		m.metrics.operation(opDeleteOrphan, err)
		if err != nil {
			return deleted, fmt.Errorf("deleting the orphan Graph subscription %s: %w", s.ID, err)
		}
		deleted++
		m.cfg.Log.Info().Str("subscription", s.ID).Str("resource", s.Resource).
			Msg("deleted a Graph subscription to this endpoint that the manager does not keep")
	}
	return deleted, nil
}

// listSubscriptions reads every page of GET /subscriptions. A next page
// elsewhere than the API's host is refused: the token goes only there.
func (m *Manager) listSubscriptions(ctx context.Context) ([]listedSubscription, error) {
	var all []listedSubscription
	next := m.subscriptionsURL
	api, err := url.Parse(m.subscriptionsURL)
	if err != nil {
		return nil, fmt.Errorf("listing the Graph subscriptions: %w", err)
	}
	for page := 0; next != ""; page++ {
		if page == maxListPages {
			return nil, fmt.Errorf("listing the Graph subscriptions: more than %d pages", maxListPages)
		}
		u, err := url.Parse(next)
		if err != nil || u.Scheme != api.Scheme || u.Host != api.Host {
			return nil, fmt.Errorf("listing the Graph subscriptions: the next page %q is not on %s", next, api.Host)
		}
		ans, err := m.callLimit(ctx, http.MethodGet, next, nil, MaxSubscriptionListAnswer, "GET /subscriptions")
		if err != nil {
			return nil, fmt.Errorf("listing the Graph subscriptions: %w", err)
		}
		if ans.status != http.StatusOK {
			return nil, fmt.Errorf("listing the Graph subscriptions: %w", apiError(ans.status, ans.body))
		}
		var p subscriptionPage
		if err := json.Unmarshal(ans.body, &p); err != nil {
			return nil, fmt.Errorf("listing the Graph subscriptions: reading page %d: %w", page+1, err)
		}
		all = append(all, p.Value...)
		next = p.NextLink
	}
	return all, nil
}

// endpointOf is u without its query and fragment, its host lower-cased:
// the endpoint whatever key the URL carries. "" for a URL that does not
// parse.
func endpointOf(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" {
		return ""
	}
	return strings.ToLower(p.Scheme) + "://" + strings.ToLower(p.Host) + p.EscapedPath()
}

// deletedStatus reports whether a DELETE answer means the subscription
// is gone (Graph may have removed it already).
func deletedStatus(status int) bool {
	switch status {
	case http.StatusNoContent, http.StatusOK, http.StatusAccepted, http.StatusNotFound:
		return true
	}
	return false
}
