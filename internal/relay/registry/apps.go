package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/pushproxy/pushproxy/internal/relayproto"
)

// Provider kinds of an app registration.
const (
	// KindAPNs is the Apple Push Notification service.
	KindAPNs = "apns"
	// KindFCM is Firebase Cloud Messaging (HTTP v1).
	KindFCM = "fcm"
	// KindWebPush is Web Push with VAPID.
	KindWebPush = "webpush"
	// KindLog is the built-in provider that records the latest badge of each
	// device in memory and logs it (standalone and tests).
	KindLog = "log"
)

// Kinds lists the provider kinds.
func Kinds() []string { return []string{KindAPNs, KindFCM, KindWebPush, KindLog} }

// APNs environments.
const (
	APNsSandbox    = "sandbox"
	APNsProduction = "production"
)

// App is a registered app: the push service that reaches its devices and
// that service's settings. It is stored as JSON under the appId in the
// relay_apps bucket. Credentials are files on the relay hosts, named by
// absolute path; their contents are never stored or logged.
type App struct {
	// AppID is the appId of device subscriptions.
	AppID string `json:"appId"`
	// Provider is the provider kind: KindAPNs, KindFCM, KindWebPush or
	// KindLog.
	Provider string `json:"provider"`
	// APNs, FCM and WebPush hold the settings of the provider kind; exactly
	// the one of Provider is set (none for KindLog).
	APNs    *APNs    `json:"apns,omitempty"`
	FCM     *FCM     `json:"fcm,omitempty"`
	WebPush *WebPush `json:"webpush,omitempty"`
	// Organizations are the partner organizations (lower-case domains)
	// allowed to send to the app's devices; the relay refuses the app to
	// any other as an app fault. An app with none is refused to every
	// organization, except a KindLog app, which holds no credentials and
	// serves any (see Serves).
	Organizations []string `json:"organizations,omitempty"`
	// WhenCreated and WhenChanged are when the app was registered and last
	// changed.
	WhenCreated time.Time `json:"whenCreated"`
	WhenChanged time.Time `json:"whenChanged"`
}

// APNs is how an app reaches Apple devices: token-based authentication.
type APNs struct {
	// KeyFile is the .p8 signing key file. Required.
	KeyFile string `json:"keyFile"`
	// KeyID is the key's 10-character identifier. Required.
	KeyID string `json:"keyId"`
	// TeamID is the developer team identifier. Required.
	TeamID string `json:"teamId"`
	// Topic is the app's bundle identifier. Required.
	Topic string `json:"topic"`
	// Environment is APNsSandbox or APNsProduction. Required.
	Environment string `json:"environment"`
	// Host overrides the environment's address (https://host[:port]), for
	// a gateway or a test server.
	Host string `json:"host,omitempty"`
}

// FCM is how an app reaches Android devices: the HTTP v1 API with a
// service account.
type FCM struct {
	// CredentialsFile is the service account JSON key file. Required.
	CredentialsFile string `json:"credentialsFile"`
	// ProjectID is the Firebase project; default the key file's project_id.
	ProjectID string `json:"projectId,omitempty"`
	// BaseURL and TokenURL override the API and OAuth 2.0 token endpoints,
	// for a gateway or a test server.
	BaseURL  string `json:"baseUrl,omitempty"`
	TokenURL string `json:"tokenUrl,omitempty"`
}

// WebPush is how an app reaches browsers: Web Push with VAPID.
type WebPush struct {
	// PrivateKeyFile is the VAPID private key file. Required.
	PrivateKeyFile string `json:"privateKeyFile"`
	// PublicKeyFile is the VAPID public key file; derived from the private
	// key when empty.
	PublicKeyFile string `json:"publicKeyFile,omitempty"`
	// Subject is the VAPID contact, mailto: or https:. Required.
	Subject string `json:"subject"`
}

// appIDPattern is what an appId may look like: it is a key of the bucket,
// so dot-separated tokens of letters, digits, '_', '=' and '-'.
var appIDPattern = regexp.MustCompile(`^[A-Za-z0-9_=-]+(\.[A-Za-z0-9_=-]+)*$`)

// ValidateAppID checks that id can name an app.
func ValidateAppID(id string) error {
	switch {
	case id == "":
		return invalid("an appId is required")
	case len(id) > 255:
		return invalid("appId is longer than 255 characters")
	case id == relayproto.MonitoringAppID:
		return invalid("appId %s is reserved for the connectivity probe", id)
	case !appIDPattern.MatchString(id):
		return invalid("appId %q may only have letters, digits, '_', '=', '-' and single dots between them", id)
	}
	return nil
}

// Validate checks that a is a complete registration: a known provider kind
// with its required settings and absolute file paths. It does not read the
// files: the relay hosts may see other files than the machine that
// registers the app.
func (a App) Validate() error {
	if err := ValidateAppID(a.AppID); err != nil {
		return err
	}
	for _, org := range a.Organizations {
		if n, err := NormalizeOrganization(org); err != nil {
			return err
		} else if n != org {
			return invalid("organization %q is not in its normal form %q", org, n)
		}
	}
	set := map[string]bool{KindAPNs: a.APNs != nil, KindFCM: a.FCM != nil, KindWebPush: a.WebPush != nil}
	for kind, has := range set {
		if has && kind != a.Provider {
			return invalid("app %s uses provider %s but has %s settings", a.AppID, a.Provider, kind)
		}
	}
	switch a.Provider {
	case KindAPNs:
		return a.APNs.validate()
	case KindFCM:
		return a.FCM.validate()
	case KindWebPush:
		return a.WebPush.validate()
	case KindLog:
		return nil
	}
	return invalid("provider %q is not one of %s", a.Provider, strings.Join(Kinds(), ", "))
}

func (c *APNs) validate() error {
	if c == nil {
		return invalid("apns: settings are missing")
	}
	if err := required("apns", [][2]string{{"key file", c.KeyFile}, {"key id", c.KeyID}, {"team id", c.TeamID}, {"topic", c.Topic}}); err != nil {
		return err
	}
	if err := absolute("apns", c.KeyFile); err != nil {
		return err
	}
	if c.Environment != APNsSandbox && c.Environment != APNsProduction {
		return invalid("apns: environment %q is not %s or %s", c.Environment, APNsSandbox, APNsProduction)
	}
	return httpsURL("apns: host", c.Host)
}

func (c *FCM) validate() error {
	if c == nil {
		return invalid("fcm: settings are missing")
	}
	if err := required("fcm", [][2]string{{"credentials file", c.CredentialsFile}}); err != nil {
		return err
	}
	if err := absolute("fcm", c.CredentialsFile); err != nil {
		return err
	}
	if err := httpsURL("fcm: base URL", c.BaseURL); err != nil {
		return err
	}
	return httpsURL("fcm: token URL", c.TokenURL)
}

func (c *WebPush) validate() error {
	if c == nil {
		return invalid("webpush: settings are missing")
	}
	if err := required("webpush", [][2]string{{"VAPID private key file", c.PrivateKeyFile}, {"VAPID subject", c.Subject}}); err != nil {
		return err
	}
	if err := absolute("webpush", c.PrivateKeyFile, c.PublicKeyFile); err != nil {
		return err
	}
	if !strings.HasPrefix(c.Subject, "mailto:") && !strings.HasPrefix(c.Subject, "https://") {
		return invalid("webpush: VAPID subject %q is not a mailto: or https: URL", c.Subject)
	}
	return nil
}

// required reports the first empty value.
func required(kind string, fields [][2]string) error {
	for _, f := range fields {
		if strings.TrimSpace(f[1]) == "" {
			return invalid("%s: the %s is required", kind, f[0])
		}
	}
	return nil
}

// absolute checks that every non-empty path is absolute: the relay reads
// the files from its own working directory, which is not the registering
// operator's.
func absolute(kind string, paths ...string) error {
	for _, p := range paths {
		if p != "" && !filepath.IsAbs(p) {
			return invalid("%s: file path %q is not absolute", kind, p)
		}
	}
	return nil
}

// httpsURL checks an optional URL: http or https with a host. Plain http is
// allowed for test servers.
func httpsURL(what, raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return invalid("%s %q is not an http(s) URL", what, raw)
	}
	return nil
}

// ErrNotBound matches the error of Serves for an organization the app is
// not bound to.
var ErrNotBound = errors.New("app not bound to the organization")

// BindCommand is the pushctl command that binds an app to an organization.
func BindCommand(appID, org string) string {
	return fmt.Sprintf("pushctl relay app bind --app-id %s --organization %s", appID, org)
}

// Serves reports nil when organization may send to the app's devices, and
// otherwise an error matching ErrNotBound that says how to bind it. An app
// registered before apps were bound to organizations (none listed) serves
// nobody until it is bound, unless it is a KindLog app, which holds no
// credentials and only logs badges.
func (a App) Serves(organization string) error {
	if slices.Contains(a.Organizations, organization) {
		return nil
	}
	if len(a.Organizations) == 0 {
		if a.Provider == KindLog {
			return nil
		}
		return fmt.Errorf("appId %q is bound to no organization (registered before apps were bound); to let %s use it: %s: %w",
			a.AppID, organization, BindCommand(a.AppID, organization), ErrNotBound)
	}
	return fmt.Errorf("appId %q is not bound to organization %s: %w", a.AppID, organization, ErrNotBound)
}

// normalizeOrganizations puts organizations in normal form, sorted, once each.
func normalizeOrganizations(orgs []string) ([]string, error) {
	out := make([]string, 0, len(orgs))
	for _, org := range orgs {
		n, err := NormalizeOrganization(org)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// BindApp adds organizations to those allowed to use the app registered
// as appID, or fails with an error matching ErrNotFound.
func (s *Store) BindApp(ctx context.Context, appID string, organizations []string) (App, error) {
	if err := ValidateAppID(appID); err != nil {
		return App{}, err
	}
	orgs, err := normalizeOrganizations(organizations)
	if err != nil {
		return App{}, err
	}
	if len(orgs) == 0 {
		return App{}, invalid("name at least one organization to bind app %s to", appID)
	}
	var a App
	err = update(ctx, s.apps, appID, func(raw []byte, exists bool) ([]byte, error) {
		if !exists {
			return nil, fmt.Errorf("app %s: %w", appID, ErrNotFound)
		}
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, fmt.Errorf("decoding app %s: %w", appID, err)
		}
		merged, err := normalizeOrganizations(append(a.Organizations, orgs...))
		if err != nil {
			return nil, err
		}
		a.Organizations, a.WhenChanged = merged, s.now().UTC()
		return json.Marshal(a)
	})
	if err != nil {
		return App{}, fmt.Errorf("binding app %s: %w", appID, err)
	}
	return a, nil
}

// AddApp registers a; with replace it overwrites a registration with the
// same appId, and otherwise refuses it with an error matching ErrExists.
func (s *Store) AddApp(ctx context.Context, a App, replace bool) (App, error) {
	orgs, err := normalizeOrganizations(a.Organizations)
	if err != nil {
		return App{}, err
	}
	a.Organizations = orgs
	if len(a.Organizations) == 0 {
		a.Organizations = nil
	}
	if err := a.Validate(); err != nil {
		return App{}, err
	}
	now := s.now().UTC()
	a.WhenCreated, a.WhenChanged = now, now
	err = update(ctx, s.apps, a.AppID, func(raw []byte, exists bool) ([]byte, error) {
		a.WhenCreated = now
		if exists {
			if !replace {
				return nil, fmt.Errorf("app %s: %w (use --replace to change it)", a.AppID, ErrExists)
			}
			var old App
			if err := json.Unmarshal(raw, &old); err == nil && !old.WhenCreated.IsZero() {
				a.WhenCreated = old.WhenCreated
			}
		}
		return json.Marshal(a)
	})
	if err != nil {
		return App{}, fmt.Errorf("registering app %s: %w", a.AppID, err)
	}
	return a, nil
}

// App returns the app registered as appID, or an error matching
// ErrNotFound.
func (s *Store) App(ctx context.Context, appID string) (App, error) {
	if err := ValidateAppID(appID); err != nil {
		return App{}, err
	}
	var a App
	if _, err := get(ctx, s.apps, appID, &a); err != nil {
		if errors.Is(err, ErrNotFound) {
			return App{}, fmt.Errorf("app %s: %w", appID, ErrNotFound)
		}
		return App{}, err
	}
	return a, nil
}

// Apps returns every registered app, by appId.
func (s *Store) Apps(ctx context.Context) ([]App, error) {
	apps, err := list[App](ctx, s.apps)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(apps, func(a, b App) int { return strings.Compare(a.AppID, b.AppID) })
	return apps, nil
}

// RemoveApp removes the app registered as appID, or fails with an error
// matching ErrNotFound.
func (s *Store) RemoveApp(ctx context.Context, appID string) error {
	if err := ValidateAppID(appID); err != nil {
		return err
	}
	err := update(ctx, s.apps, appID, func(_ []byte, exists bool) ([]byte, error) {
		if !exists {
			return nil, fmt.Errorf("app %s: %w", appID, ErrNotFound)
		}
		return nil, nil
	})
	if err != nil {
		return fmt.Errorf("removing app %s: %w", appID, err)
	}
	return nil
}
