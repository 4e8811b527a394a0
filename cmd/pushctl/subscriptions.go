package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

func subscriptionsCommand() command {
	return group("subscriptions", "list, remove or restore device subscriptions",
		command{name: "list", summary: "list device subscriptions, of one user or all", run: runSubscriptionsList},
		command{name: "remove", summary: "remove a device subscription", run: runSubscriptionsRemove},
		command{name: "tombstones", summary: "list subscriptions removed on a device-gone verdict (kept 7 days)", run: runSubscriptionsTombstones},
		command{name: "restore", summary: "restore subscriptions from their tombstones", run: runSubscriptionsRestore},
	)
}

// userFlag is the --user ADDRESS [--tenant DOMAIN] pair of several commands.
type userFlag struct {
	user   *string
	tenant *string
}

// addUserFlags registers --user and --tenant; what says what the user is for.
func addUserFlags(fs *flag.FlagSet, what string) userFlag {
	return userFlag{
		user:   fs.String("user", "", what),
		tenant: fs.String("tenant", "", "the user's organization domain (default: the domain of --user)"),
	}
}

// resolve returns the tenant and user, the tenant defaulting to the
// domain of the address. With required false, an empty --user is allowed
// and gives an empty user (and the --tenant as given).
func (u userFlag) resolve(required bool) (tenant, user string, err error) {
	user = strings.TrimSpace(*u.user)
	tenant = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(*u.tenant)), ".")
	if user == "" {
		if required {
			return "", "", fmt.Errorf("%w: --user is required", errUsage)
		}
		if tenant != "" {
			if err := events.ValidateTenant(tenant); err != nil {
				return "", "", fmt.Errorf("%w: --tenant: %v", errUsage, err)
			}
		}
		return tenant, "", nil
	}
	if tenant == "" {
		at := strings.LastIndexByte(user, '@')
		if at < 0 {
			return "", "", fmt.Errorf("%w: --user %q has no domain; give --tenant", errUsage, user)
		}
		tenant = strings.ToLower(user[at+1:])
	}
	if err := events.ValidateTenant(tenant); err != nil {
		return "", "", fmt.Errorf("%w: tenant: %v", errUsage, err)
	}
	if err := events.ValidateAddress("user", user); err != nil {
		return "", "", fmt.Errorf("%w: --user: %v", errUsage, err)
	}
	return tenant, user, nil
}

// parseUser parses the command line of a command with --user and returns
// the tenant and user as userFlag.resolve does.
func (c *cli) parseUser(fs *flag.FlagSet, args []string, who userFlag, required bool) (tenant, user string, err error) {
	if err := c.parse(fs, args); err != nil {
		return "", "", err
	}
	return who.resolve(required)
}

// withSubscriptions connects and opens the subscription store.
func withSubscriptions(ctx context.Context, o *broker.Options, f func(*subscriptions.Store) error) error {
	conn, keyer, err := connectOpen(ctx, o, broker.Keyer)
	if err != nil {
		return err
	}
	defer conn.Close()
	store, err := subscriptions.Open(ctx, conn.JS, keyer)
	if err != nil {
		return err
	}
	return f(store)
}

func runSubscriptionsList(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("subscriptions list", "pushctl subscriptions list [--user ADDRESS] [--tenant DOMAIN] [flags]", `
Lists device subscriptions: of one user with --user, of one organization
with --tenant alone, otherwise all. Devices are shown by a reference
(appId/hash), never by their push token; KEY is what pushctl subscriptions
remove --key takes. A subscription expires at EXPIRES unless the device
refreshes it.`)
	who := addUserFlags(fs, "list this user's subscriptions only (an address such as alice@fabrikam.com)")
	asJSON := fs.Bool("json", false, "print JSON (device tokens left out)")
	o := natsFlags(fs)
	tenant, user, err := c.parseUser(fs, args, who, false)
	if err != nil {
		return err
	}
	return withSubscriptions(ctx, o, func(store *subscriptions.Store) error {
		var subs []subscriptions.Subscription
		if user != "" {
			subs, err = store.List(ctx, tenant, user)
		} else {
			subs, err = store.ListAll(ctx)
		}
		if err != nil {
			return err
		}
		if tenant != "" {
			kept := subs[:0]
			for _, s := range subs {
				if s.Tenant == tenant {
					kept = append(kept, s)
				}
			}
			subs = kept
		}
		if *asJSON {
			return printSubscriptionsJSON(c.stdout, subs)
		}
		if len(subs) == 0 {
			fmt.Fprintln(c.stderr, "No subscriptions.")
			return nil
		}
		return printSubscriptions(c.stdout, subs)
	})
}

func printSubscriptions(w io.Writer, subs []subscriptions.Subscription) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tUSER\tDEVICE\tLABEL\tPLATFORM\tOPTIONS\tLAST UPDATE\tEXPIRES\tKEY")
	for _, s := range subs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Tenant, s.User, subscriptions.DeviceRef(s.AppID, s.DeviceID), orDash(s.Label),
			s.Platform, s.Options, formatTime(s.LastSubscriptionUpdate), formatTime(s.ExpiresAt), s.Key)
	}
	return tw.Flush()
}

func printSubscriptionsJSON(w io.Writer, subs []subscriptions.Subscription) error {
	type shown struct {
		subscriptions.Subscription
		DeviceID  string `json:"deviceId,omitempty"`
		DeviceRef string `json:"deviceRef"`
	}
	out := make([]shown, 0, len(subs))
	for _, s := range subs {
		out = append(out, shown{Subscription: s, DeviceRef: subscriptions.DeviceRef(s.AppID, s.DeviceID)})
	}
	return printJSON(w, out)
}

func runSubscriptionsRemove(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("subscriptions remove", "pushctl subscriptions remove (--key KEY | --user ADDRESS --app-id ID --device-id TOKEN | --user ADDRESS --all --yes) [flags]", `
Removes device subscriptions: the device stops getting badge pushes until
it subscribes again. Name one by its KEY (from pushctl subscriptions list),
or by user, app id and device notification id; or remove every
subscription of a user with --all --yes.`)
	key := fs.String("key", "", "the subscription's key, as pushctl subscriptions list prints it")
	who := addUserFlags(fs, "the user whose subscription to remove")
	appID := fs.String("app-id", "", "the app id of the device's subscription")
	deviceID := fs.String("device-id", "", "the device notification id (push token) of the subscription")
	all := fs.Bool("all", false, "remove every subscription of --user")
	yes := fs.Bool("yes", false, "confirm --all")
	o := natsFlags(fs)
	tenant, user, err := c.parseUser(fs, args, who, false)
	if err != nil {
		return err
	}
	switch {
	case *key != "" && (user != "" || *all):
		return fmt.Errorf("%w: give either --key or --user, not both", errUsage)
	case *key == "" && user == "":
		return fmt.Errorf("%w: give --key, or --user with --app-id and --device-id (or --all)", errUsage)
	case user != "" && *all && (*appID != "" || *deviceID != ""):
		return fmt.Errorf("%w: --all removes every device; drop --app-id and --device-id", errUsage)
	case user != "" && !*all && (*appID == "" || *deviceID == ""):
		return fmt.Errorf("%w: --app-id and --device-id are required with --user (or use --all)", errUsage)
	case *all && !*yes:
		return fmt.Errorf("%w: --all removes every subscription of %s; add --yes to confirm", errUsage, user)
	}
	return withSubscriptions(ctx, o, func(store *subscriptions.Store) error {
		switch {
		case *key != "":
			if err := store.DeleteKey(ctx, *key); err != nil {
				return notFoundHint(err)
			}
			fmt.Fprintf(c.stdout, "Removed subscription %s.\n", *key)
		case *all:
			subs, err := store.List(ctx, tenant, user)
			if err != nil {
				return err
			}
			for _, s := range subs {
				if err := store.DeleteKey(ctx, s.Key); err != nil && !errors.Is(err, subscriptions.ErrNotFound) {
					return err
				}
			}
			fmt.Fprintf(c.stdout, "Removed %d subscription(s) of %s.\n", len(subs), user)
		default:
			if err := store.Delete(ctx, tenant, user, *appID, *deviceID); err != nil {
				return notFoundHint(err)
			}
			fmt.Fprintf(c.stdout, "Removed subscription %s of %s.\n", subscriptions.DeviceRef(*appID, *deviceID), user)
		}
		return nil
	})
}

func notFoundHint(err error) error {
	if errors.Is(err, subscriptions.ErrNotFound) {
		return fmt.Errorf("%w (see pushctl subscriptions list)", err)
	}
	return err
}
