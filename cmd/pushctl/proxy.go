package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/settings"
)

func proxyCommand() command {
	return group("proxy", "enable, disable or show the push notification proxy",
		command{name: "enable", summary: "enable the proxy for an organization (Enable-PushNotificationProxy)", run: runProxyEnable},
		command{name: "disable", summary: "disable the proxy (Disable-PushNotificationProxy)", run: runProxyDisable},
		command{name: "show", summary: "print the proxy configuration", run: runProxyShow},
	)
}

func runProxyEnable(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("proxy enable", "pushctl proxy enable --organization DOMAIN [--uri URL] [flags]", `
Enables the push notification proxy: the dispatcher starts pushing unread
counts for the organization to the relay at --uri. The equivalent of
Exchange's Enable-PushNotificationProxy -Organization DOMAIN [-Uri URL].
Enabling again with the same values changes nothing.`)
	org := fs.String("organization", "", "the organization's domain, e.g. fabrikam.com (required)")
	uri := fs.String("uri", "", "the relay's URI (default: the one saved, or "+settings.DefaultURI+")")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if *org == "" {
		return fmt.Errorf("%w: --organization is required", errUsage)
	}
	return withSettings(ctx, o, func(s *settings.Store) error {
		p, changed, err := s.EnableProxy(ctx, *org, *uri)
		if err != nil {
			return err
		}
		if !changed && !*asJSON {
			fmt.Fprintln(c.stderr, "The proxy was already enabled with these values; nothing changed.")
		}
		return printProxy(c.stdout, p, *asJSON)
	})
}

func runProxyDisable(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("proxy disable", "pushctl proxy disable [flags]", `
Disables the push notification proxy: the dispatcher keeps tracking unread
counts but pushes nothing. The equivalent of Disable-PushNotificationProxy.`)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	return withSettings(ctx, o, func(s *settings.Store) error {
		p, _, err := s.DisableProxy(ctx)
		if err != nil {
			return err
		}
		return printProxy(c.stdout, p, *asJSON)
	})
}

func runProxyShow(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("proxy show", "pushctl proxy show [flags]", `
Prints the push notification proxy configuration with the fields Exchange
printed for the "OnPrem-Proxy" app.`)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	return withSettings(ctx, o, func(s *settings.Store) error {
		p, err := s.Proxy(ctx)
		if err != nil {
			return err
		}
		return printProxy(c.stdout, p, *asJSON)
	})
}

// printProxy prints p as Exchange's Format-List did, or as JSON.
func printProxy(w io.Writer, p settings.Proxy, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(p)
	}
	return printFields(w, [][2]string{
		{"DisplayName", p.DisplayName},
		{"Enabled", fmt.Sprint(p.Enabled)},
		{"Organization", p.Organization},
		{"Uri", p.URI},
		{"Identity", p.Identity},
		{"Name", p.Name},
		{"WhenCreated", formatTime(p.WhenCreated)},
		{"WhenChanged", formatTime(p.WhenChanged)},
	})
}

// printFields prints name : value lines with the colons aligned.
func printFields(w io.Writer, fields [][2]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	for _, f := range fields {
		fmt.Fprintf(tw, "%s\t: %s\n", f[0], f[1])
	}
	return tw.Flush()
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// withSettings connects to NATS, opens the settings and runs f.
func withSettings(ctx context.Context, o *broker.Options, f func(*settings.Store) error) error {
	conn, s, err := openSettings(ctx, o)
	if err != nil {
		return err
	}
	defer conn.Close()
	return f(s)
}
