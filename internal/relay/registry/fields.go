package registry

import (
	"fmt"
	"strings"
	"time"
)

// Certificate states at a given time, as Status reports them.
const (
	StatusActive  = "Active"
	StatusPending = "Pending"
	StatusExpired = "Expired"
)

// Status tells whether tokens signed with c are accepted at now: Active,
// Pending (before its start) or Expired (after its end).
func (c Certificate) Status(now time.Time) string {
	switch {
	case now.Before(c.Start()):
		return StatusPending
	case now.After(c.End()):
		return StatusExpired
	}
	return StatusActive
}

// CertificateFields describes one certificate of a partner as name and
// value pairs, in the order pushctl prints them (after Exchange's
// Get-MsolServicePrincipalCredential: an asymmetric Verify credential with
// start and end dates).
func CertificateFields(p Partner, c Certificate, now time.Time) [][2]string {
	return [][2]string{
		{"Organization", p.Organization},
		{"Realm", p.Realm},
		{"IssuerId", p.IssuerID},
		{"Quota", quotaField(p.Quota)},
		{"Thumbprint", c.Thumbprint},
		{"Subject", c.Subject},
		{"Type", "Asymmetric"},
		{"Usage", "Verify"},
		{"StartDate", formatDate(c.Start())},
		{"EndDate", formatDate(c.End())},
		{"Status", c.Status(now)},
		{"WhenAdded", formatDate(c.WhenAdded)},
	}
}

// quotaField describes a partner's quota for CertificateFields.
func quotaField(q *Quota) string {
	if q == nil {
		return "(the relay's --tenant-rate and --tenant-burst)"
	}
	return q.String()
}

// AppFields describes an app as name and value pairs, in the order pushctl
// prints them. Credentials appear as file paths only.
func AppFields(a App) [][2]string {
	orgs := strings.Join(a.Organizations, ", ")
	if orgs == "" {
		orgs = "(none: bind with pushctl relay app bind)"
		if a.Provider == KindLog {
			orgs = "(any: a log app serves every organization)"
		}
	}
	f := [][2]string{{"AppId", a.AppID}, {"Provider", a.Provider}, {"BoundTo", orgs}}
	switch {
	case a.APNs != nil:
		f = append(f,
			[2]string{"KeyFile", a.APNs.KeyFile},
			[2]string{"KeyId", a.APNs.KeyID},
			[2]string{"TeamId", a.APNs.TeamID},
			[2]string{"Topic", a.APNs.Topic},
			[2]string{"Environment", a.APNs.Environment},
		)
		if a.APNs.Host != "" {
			f = append(f, [2]string{"Host", a.APNs.Host})
		}
	case a.FCM != nil:
		f = append(f,
			[2]string{"CredentialsFile", a.FCM.CredentialsFile},
			[2]string{"ProjectId", a.FCM.ProjectID},
		)
		if a.FCM.BaseURL != "" {
			f = append(f, [2]string{"BaseUrl", a.FCM.BaseURL})
		}
		if a.FCM.TokenURL != "" {
			f = append(f, [2]string{"TokenUrl", a.FCM.TokenURL})
		}
	case a.WebPush != nil:
		f = append(f,
			[2]string{"VapidPrivateKeyFile", a.WebPush.PrivateKeyFile},
			[2]string{"VapidPublicKeyFile", a.WebPush.PublicKeyFile},
			[2]string{"VapidSubject", a.WebPush.Subject},
		)
	}
	return append(f,
		[2]string{"WhenCreated", formatDate(a.WhenCreated)},
		[2]string{"WhenChanged", formatDate(a.WhenChanged)},
	)
}

// dateLayouts are the forms ParseDate accepts.
var dateLayouts = []string{time.RFC3339, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"}

// ParseDate parses a --start or --end value: RFC 3339, or a date and
// optional time without a zone, taken as UTC (2027-01-31 is midnight UTC at
// the start of that day).
func ParseDate(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	for _, layout := range dateLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, invalid("date %q is not YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS] (UTC) or RFC 3339", s)
}

// String describes a partner in one line, for messages.
func (p Partner) String() string {
	return fmt.Sprintf("%s (realm %s, %d certificates)", p.Organization, p.Realm, len(p.Certificates))
}
