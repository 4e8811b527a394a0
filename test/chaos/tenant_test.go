package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pushproxy/pushproxy/internal/relayclient"
	"github.com/pushproxy/pushproxy/internal/relayproto"
	"github.com/pushproxy/pushproxy/internal/settings"
	"github.com/pushproxy/pushproxy/internal/tokens/onprem"
)

// Two organizations behind one relay: fabrikam's deployment, which runs
// the relay, and contoso's (systemOptions.neighbour), each with its own
// NATS, ingest, dispatchers, app and push service. The relay is the only
// thing they share, so it is where one organization's faults and
// credentials must stop.

// tenant is an organization with a deployment of its own, and the app its
// users' devices run.
type tenant struct{ org, app string }

// The organizations of the chaos tests. Fabrikam's deployment runs the
// relay; contoso's (systemOptions.neighbour) pushes through it.
var (
	fabrikam = tenant{org: "fabrikam.com", app: "com.fabrikam.chaos"}
	contoso  = tenant{org: "contoso.com", app: "com.contoso.chaos"}
)

// failOneTenant makes fabrikam's push service (its app's provider) fail
// while contoso's deployment, pushing through the same relay to a
// provider of its own, goes on: no answer for as long as a stop, then 403
// for fabrikam's provider key for as long as a credential fault, then 503
// for as long as a stop; then fabrikam floods the relay, far over a quota
// of its own (floodOverQuota); with load between them. Fabrikam's stuck
// sends must not hold contoso's, its revoked key must not pause contoso's
// app or remove its devices, neither its outage nor its flood may slow
// contoso's pushes; and fabrikam must recover as in the other scenarios.
// The relay's metrics must show fabrikam's sends held by its trials and
// none of contoso's (heldOnlyOneTenant).
func failOneTenant(ctx context.Context, e *faultEnv) error {
	if e.s.neighbour == nil {
		return errors.New("this fault needs a neighbour's deployment (systemOptions.neighbour)")
	}
	err := providerFaults(ctx, e, timedFault{faultStalled, e.p.stall}, timedFault{faultCredential, e.p.credFault}, timedFault{faultUnavailable, e.p.stall})
	if err == nil {
		err = pause(ctx, e.p.repeatAfter)
	}
	if err == nil {
		err = floodOverQuota(ctx, e)
	}
	if err != nil {
		return err
	}
	errs := []error{heldOnlyOneTenant(ctx, e)}
	for _, pair := range [][2]*system{{e.s, e.s.neighbour}, {e.s.neighbour, e.s}} {
		refused, err := crossTenantPush(ctx, pair[0], pair[1])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		e.f.notes = append(e.f.notes, refused)
	}
	return errors.Join(errs...)
}

// heldOnlyOneTenant checks, in the relay's metrics, that its outages held
// fabrikam's sends (the trials acted: one send a second went to the
// failing push service) and never contoso's.
func heldOnlyOneTenant(ctx context.Context, e *faultEnv) error {
	samples, err := scrape(ctx, e.s.http, e.s.relayURL(e.s.relayAddr, "/metrics"), "pushproxy_relay_outage_held_total")
	if err != nil {
		return err
	}
	held := map[string]float64{}
	for _, m := range samples {
		for _, t := range []tenant{e.s.tenant, e.s.neighbour.tenant} {
			if strings.Contains(m.labels, `organization="`+t.org+`"`) {
				held[t.org] += m.value
			}
		}
	}
	e.f.notes = append(e.f.notes, fmt.Sprintf("the relay held %.0f sends of %s while its push service was down, %.0f of %s",
		held[e.s.tenant.org], e.s.tenant.org, held[e.s.neighbour.tenant.org], e.s.neighbour.tenant.org))
	switch {
	case held[e.s.neighbour.tenant.org] > 0:
		return fmt.Errorf("the relay held %.0f sends of %s for another organization's outage", held[e.s.neighbour.tenant.org], e.s.neighbour.tenant.org)
	case held[e.s.tenant.org] == 0:
		return fmt.Errorf("the relay held no send of %s while its push service was down: no trials", e.s.tenant.org)
	}
	return nil
}

// floodFactor is how many times its load an organization sends while it
// floods the relay; its quota there is then its usual load.
const floodFactor = 10

// floodOverQuota gives fabrikam a quota at the relay of as many
// notifications per second as its usual events (pushctl relay partner
// quota, applied without a restart), sends floodFactor times its load on
// top for as long as a stop, then clears the quota. The relay holds
// fabrikam's excess back (429 with a back-off, which its dispatchers
// honour); nothing may be lost or dead-lettered, and contoso's pushes
// must not be held up.
func floodOverQuota(ctx context.Context, e *faultEnv) error {
	org := e.s.tenant.org
	quota := strconv.Itoa(int(e.p.rate))
	if _, err := e.s.pushctl(ctx, "relay", "partner", "quota", "--organization", org, "--quota", quota+":"+quota); err != nil {
		return err
	}
	down := time.Now()
	flood := startLoad(e.load.o, e.load.ic, loadOptions{rate: floodFactor * e.p.rate, maxInflight: 64}, rand.New(rand.NewPCG(e.rng.Uint64(), 3)))
	err := pause(ctx, e.p.stall)
	flood.drain(e.p.drain)
	if _, qerr := e.s.pushctl(ctx, "relay", "partner", "quota", "--organization", org, "--clear"); qerr != nil {
		err = errors.Join(err, qerr)
	}
	e.f.outages = append(e.f.outages, outage{what: fmt.Sprintf("%s flooding %d× over a quota of %s/s %s", org, floodFactor+1, quota, round(e.p.stall)), down: down, up: time.Now()})
	return err
}

// crossTenantBadge is the count an organization's token asks the relay to
// push to another organization's device: no true count ever reaches it.
const crossTenantBadge = 9999

// crossTenantPush asks the relay, with from's S2S token (the one its
// dispatchers use), to push crossTenantBadge to the first device of to's
// users through to's app. The relay must refuse it (to's app is not bound
// to from's organization): the whole request, or the device as an app
// fault. A push that got through would also show at the end as a wrong
// or out-of-order badge of that user. It returns how the relay refused.
func crossTenantPush(ctx context.Context, from, to *system) (string, error) {
	store, err := settings.Open(ctx, from.js)
	if err != nil {
		return "", fmt.Errorf("%s's settings: %w", from.tenant.org, err)
	}
	client := relayclient.New(relayclient.Config{Tokens: onprem.NewSource(store, filepath.Join(from.dir, "auth")), BreakerFailures: -1})
	n := relayproto.Notification{
		ID:      "cross-tenant",
		Payload: relayproto.Payload{TenantID: to.tenant.org, UnseenEmailCount: crossTenantBadge},
		Recipients: []relayproto.Recipient{{
			AppID: to.tenant.app, DeviceID: deviceOf(to.tenant.org, 0), LastSubscriptionUpdate: time.Now(),
		}},
	}
	proxy, err := store.Proxy(ctx)
	if err != nil {
		return "", fmt.Errorf("%s's proxy settings: %w", from.tenant.org, err)
	}
	relayURI := proxy.URI
	what := fmt.Sprintf("%s's token pushing to a device of %s's app %s", from.tenant.org, to.tenant.org, to.tenant.app)
	resp, err := client.Publish(ctx, relayURI, []relayproto.Notification{n})
	if err != nil {
		// Refused as a whole (401, 403).
		if errors.Is(err, relayclient.ErrUnauthorized) {
			return what + ": refused: " + err.Error(), nil
		}
		return "", fmt.Errorf("%s: %w", what, err)
	}
	var answers []string
	for _, r := range resp.Results {
		for _, d := range r.Devices {
			if d.Class != relayproto.ClassAppFault {
				return "", fmt.Errorf("%s: the relay answered %s (%s), want it refused as an app fault", what, d.Class, d.Reason)
			}
			answers = append(answers, fmt.Sprintf("%s (%s)", d.Class, d.Reason))
		}
	}
	if len(answers) == 0 {
		return "", fmt.Errorf("%s: the relay answered for no device", what)
	}
	return fmt.Sprintf("%s: refused: %s", what, strings.Join(answers, ", ")), nil
}

// unfeltBound is how late a push may come during a fault the badges must
// not feel: another organization's (a neighbour's push during it), or one
// relay replica's death (scenario.onTime). It is well under the relay's
// --provider-timeout (5 s): what a send queued behind that organization's
// stuck sends would wait before its "retry", and then the dispatcher's
// back-off.
const unfeltBound = 3 * time.Second

// hungReplicaBound is how late a push may come while a relay replica
// hangs: unfeltBound, and the time the dispatchers take to find the
// replica out. A connection to it that stays silent for
// relayclient.PingAfter is pinged, and closed when the ping is not
// answered within as long; its requests are then made again on another.
const hungReplicaBound = unfeltBound + 2*relayclient.PingAfter

// lateness measures, for each event of o, how long after its
// acknowledgement its device had a badge at least as high. It returns as
// evidence the events acknowledged during one of outages (faults they
// must not feel), or up to lead before one began, that came later than
// bound or never, and the figures during the outages and outside them. A
// lead counts the events whose pushes were on their way when the fault
// began.
func lateness(o *oracle, badges map[string][]badge, outages []outage, lead, bound time.Duration) (late []string, figures string) {
	var during, outside []time.Duration
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, u := range o.users {
		for _, a := range u.acked {
			in := slices.ContainsFunc(outages, func(x outage) bool { return !a.at.Before(x.down.Add(-lead)) && !a.at.After(x.up) })
			d, ok := caughtUp(badges[u.device], a.sent, a.count)
			d = max(0, d-a.at.Sub(a.sent))
			switch {
			case !in:
				outside = append(outside, d)
			case !ok:
				late = append(late, fmt.Sprintf("%s: count %d acknowledged %s, never pushed; badges %s", u.name, a.count, a.at.Format(timeFmt), showBadges(badges[u.device], 8)))
			default:
				during = append(during, d)
				if d > bound {
					late = append(late, fmt.Sprintf("%s: count %d acknowledged %s, pushed %s later", u.name, a.count, a.at.Format(timeFmt), round(d)))
				}
			}
		}
	}
	return late, fmt.Sprintf("event to push during the faults %s; outside them %s", spread(during), spread(outside))
}
