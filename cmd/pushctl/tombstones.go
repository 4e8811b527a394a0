package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/delivery"
	"github.com/pushproxy/pushproxy/internal/events"
	"github.com/pushproxy/pushproxy/internal/pushlog"
	"github.com/pushproxy/pushproxy/internal/subscriptions"
)

const tombstonesHelp = `

A tombstone is what is left of a subscription that a device-gone verdict of
the push service removed (APNs 410, FCM UNREGISTERED, Web Push 404/410): the
whole record, the reason and the time. Tombstones are kept in the KV bucket
tombstones for 7 days (--tombstone-ttl of pushctl provision), so a wrong
verdict can be undone; pushctl dlq redrive restores the subscriptions of the
letters it sends.`

// tombstoneSelection is the --tenant/--app-id/--user selection of the
// tombstone commands.
type tombstoneSelection struct {
	who   userFlag
	appID *string
}

func (s tombstoneSelection) filter(keyer *events.Keyer, tenant, user string) pushlog.TombstoneFilter {
	f := pushlog.TombstoneFilter{Tenant: tenant, AppID: *s.appID}
	if user != "" {
		f.UserKey = keyer.UserKey(tenant, user)
	}
	return f
}

// withTombstones connects, opens the subscription and tombstone stores and
// runs f.
func withTombstones(ctx context.Context, o *broker.Options, f func(js jetstream.JetStream, keyer *events.Keyer, subs *subscriptions.Store, tombs *pushlog.Tombstones) error) error {
	conn, keyer, err := connectOpen(ctx, o, broker.Keyer)
	if err != nil {
		return err
	}
	defer conn.Close()
	subs, err := subscriptions.Open(ctx, conn.JS, keyer)
	if err != nil {
		return err
	}
	tombs, err := pushlog.OpenTombstones(ctx, conn.JS)
	if err != nil {
		return fmt.Errorf("%w (run pushctl provision to add the bucket)", err)
	}
	return f(conn.JS, keyer, subs, tombs)
}

func runSubscriptionsTombstones(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("subscriptions tombstones", "pushctl subscriptions tombstones [--tenant DOMAIN] [--app-id ID] [--user ADDRESS] [flags]", `
Lists the tombstones of removed subscriptions, oldest removal first, of one
user with --user, of one organization with --tenant, of one app with
--app-id, otherwise all. Devices are shown by a reference, never by their
push token.`+tombstonesHelp)
	sel := tombstoneSelection{who: addUserFlags(fs, "list this user's tombstones only"), appID: fs.String("app-id", "", "list this app's tombstones only")}
	asJSON := fs.Bool("json", false, "print JSON (device tokens left out)")
	o := natsFlags(fs)
	tenant, user, err := c.parseUser(fs, args, sel.who, false)
	if err != nil {
		return err
	}
	return withTombstones(ctx, o, func(_ jetstream.JetStream, keyer *events.Keyer, _ *subscriptions.Store, tombs *pushlog.Tombstones) error {
		list, err := tombs.List(ctx, sel.filter(keyer, tenant, user))
		if err != nil {
			return err
		}
		if *asJSON {
			for i := range list {
				list[i].Subscription.DeviceID = subscriptions.DeviceRef(list[i].Subscription.AppID, list[i].Subscription.DeviceID)
			}
			return printJSON(c.stdout, nonNil(list))
		}
		if len(list) == 0 {
			fmt.Fprintln(c.stderr, "No tombstones.")
			return nil
		}
		return printTombstones(c.stdout, list)
	})
}

func printTombstones(w io.Writer, list []pushlog.Tombstone) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tUSER\tDEVICE\tREMOVED\tVERDICT\tREASON\tKEY")
	for _, t := range list {
		s := t.Subscription
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Tenant, s.User, subscriptions.DeviceRef(s.AppID, s.DeviceID),
			formatTime(t.RemovedAt), formatTime(t.VerdictAt), t.Reason, s.Key)
	}
	return tw.Flush()
}

func runSubscriptionsRestore(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("subscriptions restore", "pushctl subscriptions restore --tenant DOMAIN [--app-id ID] [--user ADDRESS] [flags]", `
Restores the subscriptions that device-gone verdicts removed, from their
tombstones: of an organization (--tenant, required), narrowed to one app
(--app-id) or one user (--user). Each is stored again as if the device had
just refreshed it (it lives for another subscription TTL) and its tombstone
is deleted. Use it when a verdict proved wrong, for instance after a push
service or app misconfiguration.`+tombstonesHelp)
	sel := tombstoneSelection{who: addUserFlags(fs, "restore this user's subscriptions only"), appID: fs.String("app-id", "", "restore this app's subscriptions only")}
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	o := natsFlags(fs)
	tenant, user, err := c.parseUser(fs, args, sel.who, false)
	if err != nil {
		return err
	}
	if tenant == "" {
		return fmt.Errorf("%w: --tenant is required (or --user, whose domain it defaults to)", errUsage)
	}
	return withTombstones(ctx, o, func(js jetstream.JetStream, keyer *events.Keyer, subs *subscriptions.Store, tombs *pushlog.Tombstones) error {
		list, err := tombs.List(ctx, sel.filter(keyer, tenant, user))
		if err != nil {
			return err
		}
		if len(list) == 0 {
			return fmt.Errorf("no tombstones match (see pushctl subscriptions tombstones)")
		}
		d := delivery.New(delivery.Config{JS: js, Subscriptions: subs, Tombstones: tombs, Origin: "pushctl"})
		var restored []string
		for _, t := range list {
			s, err := d.Restore(ctx, t)
			if err != nil {
				return fmt.Errorf("%w (%d restored before)", err, len(restored))
			}
			restored = append(restored, s.Key)
			if !*asJSON {
				fmt.Fprintf(c.stdout, "Restored %s of %s (%s).\n", subscriptions.DeviceRef(s.AppID, s.DeviceID), s.User, s.Key)
			}
		}
		if *asJSON {
			return printJSON(c.stdout, map[string]any{"restored": restored})
		}
		fmt.Fprintf(c.stdout, "Restored %d subscription(s).\n", len(restored))
		return nil
	})
}
