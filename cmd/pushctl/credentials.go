package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/credentials"
	"github.com/pushproxy/pushproxy/internal/flagenv"
)

func credentialsCommand() command {
	return group("credentials", "create, list, rotate or revoke ingest's scoped credentials",
		command{name: "create", summary: "create a credential for tenants and roles; prints its secret once", run: runCredentialsCreate},
		command{name: "list", summary: "list credentials (never their secrets)", run: runCredentialsList},
		command{name: "rotate", summary: "give a credential a new secret; the old one stops working", run: runCredentialsRotate},
		command{name: "revoke", summary: "delete a credential; it stops working within a second", run: runCredentialsRevoke},
	)
}

const credentialsAbout = `
A credential belongs to one tenant, a list of tenants, or every tenant
("*"), and carries roles: events (post mailbox events), subscriptions
(subscribe and unsubscribe devices), read (list subscriptions, device
tokens masked), admin (all, and device tokens in clear with ?reveal=true).
A request outside its scope gets 403 and nothing is stored or returned.

Secrets are shown once, by create and rotate, and stored only hashed.
Every ingest follows changes within a second, without a restart.`

func runCredentialsCreate(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("credentials create", "pushctl credentials create --tenant DOMAIN --role ROLE [--kind bearer|basic|graph|ews --user NAME] [flags]", credentialsAbout+`

A bearer credential is sent as "Authorization: Bearer <secret>" (native API,
subscriptions API); a basic one as the user and password of Dovecot's OX
driver URL or Lua script; a graph one as the clientState of the Microsoft
Graph subscriptions of its tenants; an ews one as the key of the URL of its
tenants' Exchange EWS push subscriptions (.../v1/ews?key=<secret>). Graph
and ews credentials only post events (role events, their default): a
notification for another tenant gets 403.`)
	var tenants, roles flagenv.StringList
	fs.Var(&tenants, "tenant", `tenant (domain) the credential may act for; repeat or comma-separate, "*" for every tenant (required)`)
	fs.Var(&roles, "role", "role: events, subscriptions, read or admin; repeat or comma-separate (required, except for --kind graph and ews: events)")
	kind := fs.String("kind", string(credentials.KindBearer), "bearer (native and subscriptions APIs), basic (Dovecot), graph (clientState of Graph subscriptions) or ews (key of EWS push subscription URLs)")
	user := fs.String("user", "", "user name of a basic credential")
	description := fs.String("description", "", "what the credential is for, shown by list")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	if eventsOnly := credentials.Kind(*kind) == credentials.KindGraph || credentials.Kind(*kind) == credentials.KindEWS; len(tenants) == 0 || (len(roles) == 0 && !eventsOnly) {
		return fmt.Errorf("%w: --tenant and --role are required", errUsage)
	}
	spec := credentials.Spec{Kind: credentials.Kind(*kind), User: *user, Tenants: tenants, Description: *description}
	for _, r := range roles {
		role, err := credentials.ParseRole(r)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		spec.Roles = append(spec.Roles, role)
	}
	return withCredentials(ctx, o, func(s *credentials.Store) error {
		cred, secret, err := s.Create(ctx, spec)
		if err != nil {
			return err
		}
		return printSecret(c, cred, secret, *asJSON)
	})
}

func runCredentialsList(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("credentials list", "pushctl credentials list [flags]", credentialsAbout)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	return withCredentials(ctx, o, func(s *credentials.Store) error {
		all, err := s.List(ctx)
		if err != nil {
			return err
		}
		for i := range all {
			all[i].SecretHash = ""
		}
		if *asJSON {
			return json.NewEncoder(c.stdout).Encode(all)
		}
		return printCredentials(c.stdout, all)
	})
}

func runCredentialsRotate(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("credentials rotate", "pushctl credentials rotate ID [flags]", `
Gives the credential a new secret and prints it once; the old secret stops
working within a second. Put the new secret in place first where you can
(for a Dovecot credential: its OX URL or Lua settings), then rotate.`)
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	id, o, err := oneID(c, fs, args)
	if err != nil {
		return err
	}
	return withCredentials(ctx, o, func(s *credentials.Store) error {
		cred, secret, err := s.Rotate(ctx, id)
		if err != nil {
			return err
		}
		return printSecret(c, cred, secret, *asJSON)
	})
}

func runCredentialsRevoke(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("credentials revoke", "pushctl credentials revoke ID [flags]", `
Deletes the credential: requests with it get 401 within a second.`)
	id, o, err := oneID(c, fs, args)
	if err != nil {
		return err
	}
	return withCredentials(ctx, o, func(s *credentials.Store) error {
		if err := s.Revoke(ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "revoked %s\n", id)
		return nil
	})
}

// oneID parses flags and the one positional argument, a credential id.
func oneID(c *cli, fs *flag.FlagSet, args []string) (string, *broker.Options, error) {
	o := natsFlags(fs)
	pos, err := c.parseWithArgs(fs, args)
	if err != nil {
		return "", nil, err
	}
	if len(pos) != 1 {
		return "", nil, fmt.Errorf("%w: give one credential id (see pushctl credentials list)", errUsage)
	}
	return pos[0], o, nil
}

// withCredentials opens the credentials store for f.
func withCredentials(ctx context.Context, o *broker.Options, f func(*credentials.Store) error) error {
	conn, store, err := connectOpen(ctx, o, credentials.Open)
	if err != nil {
		return err
	}
	defer conn.Close()
	return f(store)
}

// printSecret prints a credential with its secret, which is shown only
// now.
func printSecret(c *cli, cred credentials.Credential, secret string, asJSON bool) error {
	if asJSON {
		cred.SecretHash = ""
		return json.NewEncoder(c.stdout).Encode(struct {
			credentials.Credential
			Secret string `json:"secret"`
		}{cred, secret})
	}
	fields := [][2]string{{"Id", cred.ID}, {"Kind", string(cred.Kind)}}
	if cred.User != "" {
		fields = append(fields, [2]string{"User", cred.User})
	}
	fields = append(fields,
		[2]string{"Tenants", strings.Join(cred.Tenants, ",")},
		[2]string{"Roles", joinRoles(cred.Roles)},
		[2]string{"Secret", secret},
	)
	if err := printFields(c.stdout, fields); err != nil {
		return err
	}
	fmt.Fprintln(c.stderr, "The secret is shown only now; it is stored hashed.")
	return nil
}

// printCredentials prints a table of credentials.
func printCredentials(w io.Writer, all []credentials.Credential) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tUSER\tTENANTS\tROLES\tCREATED\tDESCRIPTION")
	for _, cr := range all {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", cr.ID, cr.Kind, orDash(cr.User), strings.Join(cr.Tenants, ","),
			joinRoles(cr.Roles), formatTime(cr.Created), orDash(cr.Description))
	}
	return tw.Flush()
}

func joinRoles(roles []credentials.Role) string {
	out := make([]string, len(roles))
	for i, r := range roles {
		out[i] = string(r)
	}
	return strings.Join(out, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
