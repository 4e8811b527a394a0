package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Quota is an organization's own notification quota at the relay: it
// overrides the relay's --tenant-rate and --tenant-burst for that
// organization. It is stored in the organization's Partner record, so
// every relay replica applies a change at once, without a restart.
type Quota struct {
	// Rate is how many notifications per second the organization may send
	// on average.
	Rate float64 `json:"rate"`
	// Burst is how many it may send at once (the token bucket's size).
	// Zero means QuotaBurstSeconds of Rate.
	Burst int `json:"burst,omitempty"`
}

// QuotaBurstSeconds is the burst of a quota given without one, in seconds
// of its rate: the same proportion as the relay's default (20,000 for
// 5,000/s), enough for a dispatcher's backlog after a short outage.
const QuotaBurstSeconds = 4

// Bounds of a quota, against typing mistakes: no relay replica forwards a
// million notifications per second.
const (
	maxQuotaRate  = 1_000_000
	maxQuotaBurst = QuotaBurstSeconds * maxQuotaRate
)

// ParseQuota parses "rate[:burst]", e.g. "20000" (burst 4 seconds of it)
// or "20000:50000". Errors wrap ErrInvalid and fit one line.
func ParseQuota(s string) (Quota, error) {
	spec := strings.TrimSpace(s)
	rateText, burstText, hasBurst := strings.Cut(spec, ":")
	var q Quota
	r, err := strconv.ParseFloat(strings.TrimSpace(rateText), 64)
	if err != nil {
		return Quota{}, invalid("quota %q is not rate[:burst]: rate %q is not a number", s, rateText)
	}
	q.Rate = r
	if hasBurst {
		b, err := strconv.Atoi(strings.TrimSpace(burstText))
		if err != nil {
			return Quota{}, invalid("quota %q is not rate[:burst]: burst %q is not a whole number", s, burstText)
		}
		if b < 1 {
			return Quota{}, invalid("quota %q: burst %d must be at least 1", s, b)
		}
		q.Burst = b
	}
	return q.normalize()
}

// normalize checks q and fills in its default burst. Errors wrap
// ErrInvalid.
func (q Quota) normalize() (Quota, error) {
	if math.IsNaN(q.Rate) || q.Rate <= 0 || q.Rate > maxQuotaRate {
		return Quota{}, invalid("quota rate %g must be more than 0 and at most %d notifications per second", q.Rate, maxQuotaRate)
	}
	if q.Burst == 0 {
		q.Burst = int(math.Ceil(q.Rate * QuotaBurstSeconds))
	}
	if q.Burst < 1 || q.Burst > maxQuotaBurst {
		return Quota{}, invalid("quota burst %d must be 1 to %d notifications", q.Burst, maxQuotaBurst)
	}
	return q, nil
}

// String prints q for lists and logs, e.g. "20000/s, burst 80000".
func (q Quota) String() string {
	return strconv.FormatFloat(q.Rate, 'f', -1, 64) + "/s, burst " + strconv.Itoa(q.Burst)
}

// SetQuota gives organization its own quota, or with nil takes it away
// (the relay's --tenant-rate and --tenant-burst apply again). The partner
// must be registered (else an error matching ErrNotFound). A quota that is
// not valid is refused with an error matching ErrInvalid before anything
// is written. It returns the partner as registered now.
func (s *Store) SetQuota(ctx context.Context, organization string, q *Quota) (Partner, error) {
	org, err := NormalizeOrganization(organization)
	if err != nil {
		return Partner{}, err
	}
	if q != nil {
		n, err := q.normalize()
		if err != nil {
			return Partner{}, fmt.Errorf("setting the quota of %s: %w", org, err)
		}
		q = &n
	}
	var saved Partner
	err = update(ctx, s.partners, org, func(raw []byte, exists bool) ([]byte, error) {
		if !exists {
			return nil, fmt.Errorf("partner %s: %w", org, ErrNotFound)
		}
		var p Partner
		if err := json.Unmarshal(raw, &p); err != nil {
			return nil, fmt.Errorf("decoding partner %s: %w", org, err)
		}
		p.Quota = q
		p.WhenChanged = s.now().UTC()
		saved = p
		return json.Marshal(p)
	})
	if err != nil {
		return Partner{}, fmt.Errorf("setting the quota of %s: %w", org, err)
	}
	return saved, nil
}
