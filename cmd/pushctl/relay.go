package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/flagenv"
	"github.com/pushproxy/pushproxy/internal/relay"
	"github.com/pushproxy/pushproxy/internal/relay/registry"
)

func relayCommand() command {
	return group("relay", "manage the relay's partners and apps",
		subgroup("relay", "partner", "register the S2S certificates of partner organizations",
			command{name: "add", summary: "register an organization's signing certificate (New-MsolServicePrincipalCredential)", run: runPartnerAdd},
			command{name: "list", summary: "list partner organizations and their certificates", run: runPartnerList},
			command{name: "remove", summary: "remove a partner, or one of its certificates", run: runPartnerRemove},
			command{name: "quota", summary: "set or clear an organization's own notification quota", run: runPartnerQuota},
		),
		subgroup("relay", "app", "register apps and the push service of each",
			command{name: "add", summary: "register an app with its provider (apns, fcm, webpush or log)", run: runAppAdd},
			command{name: "bind", summary: "allow organizations to use a registered app", run: runAppBind},
			command{name: "list", summary: "list registered apps", run: runAppList},
			command{name: "remove", summary: "remove an app", run: runAppRemove},
		),
	)
}

// subgroup is a group inside the group parent, so that its messages name
// the whole command ("pushctl relay partner add: ...").
func subgroup(parent, name, summary string, subs ...command) command {
	g := group(parent+" "+name, summary, subs...)
	g.name = name
	return g
}

const relayNATSHelp = `

The registries live in key-value buckets (relay_partners, relay_apps) of the
relay's NATS server (--nats-url; for pushctl standalone its embedded server).
Every running relay picks changes up at once.`

func runPartnerAdd(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("relay partner add", "pushctl relay partner add --organization DOMAIN --certificate FILE [flags]", `
Registers the public S2S signing certificate of a partner organization, so the
relay accepts its tokens and takes the organization as their tenant: what
New-MsolServicePrincipalCredential -Type asymmetric -Usage Verify did for
Exchange. The certificate is the .cer file (DER or PEM) that "pushctl auth"
exported on the organization's side. Register the next certificate ahead of a
rotation: both are accepted until the old one's end date. Adding a registered
certificate again updates its dates.`+relayNATSHelp)
	org := fs.String("organization", "", "the organization's domain, e.g. fabrikam.com (required)")
	certFile := fs.String("certificate", "", "the organization's public certificate file, .cer (DER) or PEM (required)")
	realm := fs.String("realm", "", "realm of the organization's tokens (default: the realm already registered, or the organization)")
	issuerID := fs.String("issuer-id", "", "issuer id the organization's tokens must carry (default: any)")
	start := fs.String("start", "", "accept the certificate from this date, YYYY-MM-DD[THH:MM[:SS]] UTC or RFC 3339 (default: its own start)")
	end := fs.String("end", "", "accept the certificate until this date (default: its own expiry)")
	asJSON := fs.Bool("json", false, "print JSON instead of a list")
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if *org == "" || *certFile == "" {
		return fmt.Errorf("%w: --organization and --certificate are required", errUsage)
	}
	reg := registry.CertificateRegistration{Organization: *org, Realm: *realm, IssuerID: *issuerID}
	var err error
	if reg.StartDate, err = optionalDate("--start", *start); err != nil {
		return err
	}
	if reg.EndDate, err = optionalDate("--end", *end); err != nil {
		return err
	}
	if reg.Certificate, err = os.ReadFile(*certFile); err != nil {
		return fmt.Errorf("reading certificate: %w", err)
	}
	return withRegistry(ctx, o, func(s *registry.Store) error {
		p, cert, err := s.AddCertificate(ctx, reg)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(c.stdout, p)
		}
		return printFields(c.stdout, registry.CertificateFields(p, cert, time.Now()))
	})
}

func runPartnerList(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("relay partner list", "pushctl relay partner list [--organization DOMAIN] [flags]", `
Lists the partner organizations and their registered certificates, one block
per certificate, with the dates between which it is accepted and whether it is
Active, Pending or Expired now.`+relayNATSHelp)
	org := fs.String("organization", "", "list only this organization")
	asJSON := fs.Bool("json", false, "print JSON instead of a list")
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	return withRegistry(ctx, o, func(s *registry.Store) error {
		var partners []registry.Partner
		if *org != "" {
			p, err := s.Partner(ctx, *org)
			if err != nil {
				return err
			}
			partners = []registry.Partner{p}
		} else {
			var err error
			if partners, err = s.Partners(ctx); err != nil {
				return err
			}
		}
		if *asJSON {
			return printJSON(c.stdout, nonNil(partners))
		}
		if len(partners) == 0 {
			fmt.Fprintln(c.stderr, "No partner organizations are registered.")
			return nil
		}
		return printPartners(c.stdout, partners)
	})
}

func runPartnerRemove(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("relay partner remove", "pushctl relay partner remove --organization DOMAIN [--thumbprint T] [flags]", `
Removes a partner organization, whose tokens are then refused, or with
--thumbprint only one of its certificates (for instance the old one after a
rotation). Removing the last certificate removes the partner.`+relayNATSHelp)
	org := fs.String("organization", "", "the organization's domain (required)")
	thumbprint := fs.String("thumbprint", "", "remove only the certificate with this thumbprint (40 hex characters)")
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if *org == "" {
		return fmt.Errorf("%w: --organization is required", errUsage)
	}
	return withRegistry(ctx, o, func(s *registry.Store) error {
		left, err := s.RemovePartner(ctx, *org, *thumbprint)
		if err != nil {
			return err
		}
		removed := "partner"
		if left.Organization != "" {
			removed = "certificate"
		}
		if *asJSON {
			return printJSON(c.stdout, map[string]any{"organization": strings.ToLower(*org), "removed": removed, "thumbprint": strings.ToUpper(*thumbprint), "partner": left})
		}
		if removed == "partner" {
			fmt.Fprintf(c.stdout, "Removed partner %s: its tokens are no longer accepted.\n", strings.ToLower(*org))
			return nil
		}
		fmt.Fprintf(c.stdout, "Removed certificate %s of %s; %d certificate(s) left.\n", strings.ToUpper(*thumbprint), left.Organization, len(left.Certificates))
		return nil
	})
}

func runPartnerQuota(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("relay partner quota", "pushctl relay partner quota --organization DOMAIN (--quota RATE[:BURST] | --clear) [flags]", `
Sets how many notifications per second an organization may send through
the relay on average (RATE) and at once (BURST, 4 seconds of the rate when
left out), instead of the relay's --tenant-rate and --tenant-burst; --clear
goes back to those. Every relay replica applies it at the organization's
next request, without a restart; each replica counts on its own, so N
replicas let through up to N times the quota. Above it the relay answers
429 and the dispatchers wait and send again (alert
PushproxyRelayTenantThrottled).`+relayNATSHelp)
	org := fs.String("organization", "", "the organization's domain (required)")
	quota := fs.String("quota", "", "the quota, RATE[:BURST], e.g. 20000 or 20000:80000")
	clearQuota := fs.Bool("clear", false, "remove the organization's own quota: the relay's defaults apply")
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	switch {
	case *org == "":
		return fmt.Errorf("%w: --organization is required", errUsage)
	case (*quota == "") == !*clearQuota:
		return fmt.Errorf("%w: give --quota RATE[:BURST] or --clear", errUsage)
	}
	var q *registry.Quota
	if *quota != "" {
		parsed, err := registry.ParseQuota(*quota)
		if err != nil {
			return err
		}
		q = &parsed
	}
	return withRegistry(ctx, o, func(s *registry.Store) error {
		p, err := s.SetQuota(ctx, *org, q)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(c.stdout, p)
		}
		if p.Quota == nil {
			fmt.Fprintf(c.stdout, "Cleared the quota of %s: the relay's --tenant-rate and --tenant-burst apply.\n", p.Organization)
			return nil
		}
		fmt.Fprintf(c.stdout, "Quota of %s: %g notifications/s, bursts of %d; every relay replica applies it at the next request.\n", p.Organization, p.Quota.Rate, p.Quota.Burst)
		return nil
	})
}

// appFlags are the provider settings of "relay app add".
type appFlags struct {
	apns    registry.APNs
	fcm     registry.FCM
	webpush registry.WebPush
}

// providerFlagPrefix maps a provider kind to the prefix of its flags.
var providerFlagPrefix = map[string]string{registry.KindAPNs: "apns-", registry.KindFCM: "fcm-", registry.KindWebPush: "vapid-"}

func (f *appFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.apns.KeyFile, "apns-key-file", "", "apns: the .p8 token signing key file")
	fs.StringVar(&f.apns.KeyID, "apns-key-id", "", "apns: the key's 10-character id")
	fs.StringVar(&f.apns.TeamID, "apns-team-id", "", "apns: the developer team id")
	fs.StringVar(&f.apns.Topic, "apns-topic", "", "apns: the app's bundle id")
	fs.StringVar(&f.apns.Environment, "apns-environment", "", "apns: sandbox or production (required: a token of one is invalid in the other)")
	fs.StringVar(&f.apns.Host, "apns-host", "", "apns: another APNs address, https://host[:port] (a gateway or test server)")
	fs.StringVar(&f.fcm.CredentialsFile, "fcm-credentials", "", "fcm: the service account JSON key file")
	fs.StringVar(&f.fcm.ProjectID, "fcm-project", "", "fcm: the Firebase project id (default: the key file's project_id)")
	fs.StringVar(&f.fcm.BaseURL, "fcm-base-url", "", "fcm: another FCM API address (a gateway or test server)")
	fs.StringVar(&f.fcm.TokenURL, "fcm-token-url", "", "fcm: another OAuth 2.0 token endpoint (default: the key file's token_uri)")
	fs.StringVar(&f.webpush.PrivateKeyFile, "vapid-private-key", "", "webpush: the VAPID private key file (base64url or PEM)")
	fs.StringVar(&f.webpush.PublicKeyFile, "vapid-public-key", "", "webpush: the VAPID public key file (default: derived from the private key)")
	fs.StringVar(&f.webpush.Subject, "vapid-subject", "", "webpush: the VAPID contact, mailto:... or https://...")
}

// app builds the registration of appID with provider kind from the flags,
// refusing flags of another provider and making file paths absolute.
func (f *appFlags) app(fs *flag.FlagSet, appID, kind string) (registry.App, error) {
	var misplaced []string
	fs.Visit(func(fl *flag.Flag) {
		for k, prefix := range providerFlagPrefix {
			if k != kind && strings.HasPrefix(fl.Name, prefix) {
				misplaced = append(misplaced, "--"+fl.Name)
			}
		}
	})
	if len(misplaced) > 0 {
		return registry.App{}, fmt.Errorf("%w: %s not used with --provider %s", errUsage, strings.Join(misplaced, ", "), kind)
	}
	a := registry.App{AppID: appID, Provider: kind}
	var err error
	switch kind {
	case registry.KindAPNs:
		a.APNs = &f.apns
		err = absPaths(&a.APNs.KeyFile)
	case registry.KindFCM:
		a.FCM = &f.fcm
		err = absPaths(&a.FCM.CredentialsFile)
	case registry.KindWebPush:
		a.WebPush = &f.webpush
		err = absPaths(&a.WebPush.PrivateKeyFile, &a.WebPush.PublicKeyFile)
	}
	return a, err
}

func runAppAdd(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("relay app add", "pushctl relay app add --app-id ID --provider apns|fcm|webpush|log [provider flags] [flags]", `
Registers an app: the devices of subscriptions with this appId get their
badges through the given push service. Credentials stay in files on the relay
hosts: the registration holds their paths only (made absolute here), and
pushctl loads them once to check them unless --skip-check is given (use it
when the files exist only on the relay hosts).

  apns     --apns-key-file --apns-key-id --apns-team-id --apns-topic --apns-environment
  fcm      --fcm-credentials [--fcm-project]
  webpush  --vapid-private-key [--vapid-public-key] --vapid-subject
  log      no settings: the built-in provider logs badges and shows them on the
           relay's devices page

An app is bound to the organizations named with --organization (repeat it,
or separate with commas): the relay refuses the app to any other
organization as an app fault, and forwards nothing. An apns, fcm or webpush
app needs at least one; a log app with none serves every organization.`+relayNATSHelp)
	appID := fs.String("app-id", "", "the appId of device subscriptions (required)")
	var orgs flagenv.StringList
	fs.Var(&orgs, "organization", "an organization (domain) allowed to use the app; repeat for several (required except for --provider log)")
	kind := fs.String("provider", "", "the push service: apns, fcm, webpush or log (required)")
	replace := fs.Bool("replace", false, "replace the registration if the app is already registered")
	skipCheck := fs.Bool("skip-check", false, "do not load the credential files here")
	asJSON := fs.Bool("json", false, "print JSON instead of a list")
	var pf appFlags
	pf.register(fs)
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if *appID == "" || *kind == "" {
		return fmt.Errorf("%w: --app-id and --provider are required", errUsage)
	}
	app, err := pf.app(fs, *appID, strings.ToLower(*kind))
	if err != nil {
		return err
	}
	for _, org := range orgs {
		n, err := registry.NormalizeOrganization(org)
		if err != nil {
			return fmt.Errorf("%w: --organization %q: %v", errUsage, org, err)
		}
		app.Organizations = append(app.Organizations, n)
	}
	if err := app.Validate(); err != nil {
		return err
	}
	if len(orgs) == 0 && app.Provider != registry.KindLog {
		return fmt.Errorf("%w: --organization is required: name the organizations allowed to use app %s", errUsage, app.AppID)
	}
	if !*skipCheck {
		if err := relay.CheckApp(app); err != nil {
			return fmt.Errorf("checking app %s: %w (use --skip-check if the files exist only on the relay hosts)", app.AppID, err)
		}
	}
	return withRegistry(ctx, o, func(s *registry.Store) error {
		saved, err := s.AddApp(ctx, app, *replace)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(c.stdout, saved)
		}
		return printFields(c.stdout, registry.AppFields(saved))
	})
}

func runAppBind(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("relay app bind", "pushctl relay app bind --app-id ID --organization DOMAIN [--organization DOMAIN...] [flags]", `
Allows more organizations to use a registered app; those already allowed
stay. Apps registered before apps were bound to organizations serve nobody
(except log apps) until they are bound: the relay answers their devices
"appFault" with this command in the reason.`+relayNATSHelp)
	appID := fs.String("app-id", "", "the registered appId (required)")
	var orgs flagenv.StringList
	fs.Var(&orgs, "organization", "an organization (domain) to allow; repeat for several (required)")
	asJSON := fs.Bool("json", false, "print JSON instead of a list")
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if *appID == "" || len(orgs) == 0 {
		return fmt.Errorf("%w: --app-id and --organization are required", errUsage)
	}
	for _, org := range orgs {
		if _, err := registry.NormalizeOrganization(org); err != nil {
			return fmt.Errorf("%w: --organization %q: %v", errUsage, org, err)
		}
	}
	return withRegistry(ctx, o, func(s *registry.Store) error {
		saved, err := s.BindApp(ctx, *appID, orgs)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(c.stdout, saved)
		}
		return printFields(c.stdout, registry.AppFields(saved))
	})
}

func runAppList(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("relay app list", "pushctl relay app list [flags]", `
Lists the registered apps with their provider and its settings (credential
file paths, never their contents).`+relayNATSHelp)
	asJSON := fs.Bool("json", false, "print JSON instead of a list")
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	return withRegistry(ctx, o, func(s *registry.Store) error {
		apps, err := s.Apps(ctx)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(c.stdout, nonNil(apps))
		}
		if len(apps) == 0 {
			fmt.Fprintln(c.stderr, "No apps are registered.")
			return nil
		}
		return printBlocks(c.stdout, len(apps), func(i int) [][2]string { return registry.AppFields(apps[i]) })
	})
}

func runAppRemove(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("relay app remove", "pushctl relay app remove --app-id ID [flags]", `
Removes an app: its devices' badges are then answered "appFault" (their
subscriptions are kept).`+relayNATSHelp)
	appID := fs.String("app-id", "", "the appId to remove (required)")
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if *appID == "" {
		return fmt.Errorf("%w: --app-id is required", errUsage)
	}
	return withRegistry(ctx, o, func(s *registry.Store) error {
		if err := s.RemoveApp(ctx, *appID); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(c.stdout, map[string]string{"appId": *appID, "removed": "app"})
		}
		fmt.Fprintf(c.stdout, "Removed app %s.\n", *appID)
		return nil
	})
}

// withRegistry connects to the relay's NATS, opens the registries and runs
// f. The relay's NATS need not hold the on-premises layout, so unlike other
// commands this does not check for it.
func withRegistry(ctx context.Context, o *broker.Options, f func(*registry.Store) error) error {
	if len(o.URLs) == 0 && !o.Embedded {
		o.URLs = []string{defaultNATSURL}
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := broker.Connect(cctx, *o)
	if err != nil {
		return fmt.Errorf("%w (is the relay's NATS server running? set --nats-url)", err)
	}
	defer conn.Close()
	s, err := registry.Open(cctx, conn.JS)
	if err != nil {
		return err
	}
	return f(s)
}

// printPartners prints one block per certificate of every partner.
func printPartners(w io.Writer, partners []registry.Partner) error {
	now := time.Now()
	var blocks [][][2]string
	for _, p := range partners {
		for _, cert := range p.Certificates {
			blocks = append(blocks, registry.CertificateFields(p, cert, now))
		}
	}
	return printBlocks(w, len(blocks), func(i int) [][2]string { return blocks[i] })
}

// printBlocks prints n blocks of aligned fields separated by blank lines,
// as Format-List does.
func printBlocks(w io.Writer, n int, block func(i int) [][2]string) error {
	for i := range n {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if err := printFields(w, block(i)); err != nil {
			return err
		}
	}
	return nil
}

// printJSON prints v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// nonNil makes an empty list print as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// optionalDate parses a date flag; empty means none.
func optionalDate(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := registry.ParseDate(v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %s: %v", errUsage, name, errors.Unwrap(err))
	}
	return t, nil
}

// absPaths makes every non-empty path absolute.
func absPaths(paths ...*string) error {
	for _, p := range paths {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return fmt.Errorf("resolving %s: %w", *p, err)
		}
		*p = abs
	}
	return nil
}
