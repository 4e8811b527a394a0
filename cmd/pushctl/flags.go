package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/flagenv"
)

// defaultNATSURL is where pushctl finds the NATS server of a running
// "pushctl standalone" (see --nats-listen there).
const defaultNATSURL = "nats://127.0.0.1:4222"

// newFlags returns a flag set for a command whose --help prints synopsis,
// description and every flag with its environment variable.
func (c *cli) newFlags(name, synopsis, description string) *flag.FlagSet {
	fs := flag.NewFlagSet("pushctl "+name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	flagenv.SetUsage(fs, synopsis, description)
	return fs
}

// parse parses args and the PUSHPROXY_* environment into fs. Extra
// positional arguments are a usage error.
func (c *cli) parse(fs *flag.FlagSet, args []string) error {
	if err := flagenv.Parse(fs, args, c.getenv); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return nil
}

// natsFlags registers the flags to reach the NATS server of a deployment.
func natsFlags(fs *flag.FlagSet) *broker.Options {
	o := broker.ConnectFlags(fs, "pushctl", false)
	fs.Lookup("nats-url").Usage += " (default " + defaultNATSURL + ", where pushctl standalone listens)"
	return o
}

// connect connects to NATS and checks that the layout is provisioned, with
// an error that tells the operator what to do.
func connect(ctx context.Context, o *broker.Options) (*broker.Conn, error) {
	if len(o.URLs) == 0 && !o.Embedded {
		o.URLs = []string{defaultNATSURL}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := broker.Connect(ctx, *o)
	if err != nil {
		return nil, fmt.Errorf("%w (is pushctl standalone or a NATS server running? set --nats-url)", err)
	}
	if err := broker.Ready(ctx, conn.JS); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}
