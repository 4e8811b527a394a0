// Package daemon is the start-up every pushproxy daemon shares: the NATS,
// provisioning and log flags (each also a PUSHPROXY_* environment
// variable), a --help that explains them, the logger, the NATS connection
// and optional provisioning. A command's main builds its own flags on
// Command.Flags and calls Main with what it runs.
package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pushproxy/pushproxy/internal/broker"
	"github.com/pushproxy/pushproxy/internal/flagenv"
	"github.com/pushproxy/pushproxy/internal/service"
	"github.com/pushproxy/pushproxy/internal/version"
)

// Command is a daemon's command line.
type Command struct {
	// Flags is where the command registers its own flags.
	Flags *flag.FlagSet

	name      string
	synopsis  string
	about     string
	stderr    io.Writer
	nats      *broker.Options
	provision *bool
	layout    *broker.Layout
	logLevel  *string
	logFormat *string
	debugAddr *string
	version   *bool
	out       io.Writer
}

// stdout is where --version goes.
func (c *Command) stdout() io.Writer {
	if c.out != nil {
		return c.out
	}
	return os.Stdout
}

// Options choose the shared flags a command has.
type Options struct {
	// Provision adds --provision and the layout flags.
	Provision bool
	// Embedded makes --nats-embedded default to true.
	Embedded bool
	// Stdout receives --version (os.Stdout when nil).
	Stdout io.Writer
}

// New returns the command line of the daemon name with the shared flags.
// synopsis and about are shown by --help above the flags.
func New(name, synopsis, about string, stderr io.Writer, opts Options) *Command {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &Command{Flags: fs, name: name, synopsis: synopsis, about: about, stderr: stderr, out: opts.Stdout}
	c.nats = broker.ConnectFlags(fs, "pushproxy-"+name, opts.Embedded)
	if opts.Provision {
		c.provision = fs.Bool("provision", false, "create or update the streams and buckets (with the layout flags) before starting")
		c.layout = broker.LayoutFlags(fs)
	}
	c.version = fs.Bool("version", false, "print the version, commit, Go and NATS server versions, and exit")
	c.logLevel = fs.String("log-level", "info", "log level: debug, info, warn or error")
	c.logFormat = fs.String("log-format", "auto", "log format: json, console, or auto (console on a terminal)")
	c.debugAddr = fs.String("debug-addr", "", service.DebugAddrUsage)
	return c
}

// NATS is the connection options the flags filled.
func (c *Command) NATS() *broker.Options { return c.nats }

// Layout is the layout the flags filled, or nil without Options.Provision.
func (c *Command) Layout() *broker.Layout { return c.layout }

// Env is what a running daemon gets: its logger, its NATS connection and a
// metrics registry.
type Env struct {
	Log      zerolog.Logger
	Conn     *broker.Conn
	Registry *prometheus.Registry
}

// Main parses args (and the environment through getenv), connects to NATS,
// provisions when asked, and calls run until ctx ends or SIGINT or SIGTERM
// arrives. It returns the exit code: 0 when run returned nil, 1 when it or
// the start-up failed, 2 for a bad command line.
func (c *Command) Main(ctx context.Context, args []string, getenv func(string) string, run func(ctx context.Context, env Env) error) int {
	flagenv.SetUsage(c.Flags, c.synopsis, c.about)
	if err := flagenv.Parse(c.Flags, args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(c.stderr, "%s: %v\n", c.name, err)
		return 2
	}
	if *c.version {
		fmt.Fprintln(c.stdout(), version.String(c.name))
		return 0
	}
	if c.Flags.NArg() > 0 {
		fmt.Fprintf(c.stderr, "%s: unexpected argument %q (run %s --help)\n", c.name, c.Flags.Arg(0), c.name)
		return 2
	}
	if *c.debugAddr != "" {
		if err := service.CheckDebugAddr(*c.debugAddr); err != nil {
			fmt.Fprintf(c.stderr, "%s: --debug-addr: %v\n", c.name, err)
			return 2
		}
	}
	log, err := service.NewLogger(c.stderr, *c.logLevel, *c.logFormat)
	if err != nil {
		fmt.Fprintf(c.stderr, "%s: %v\n", c.name, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return c.run(ctx, log, run)
}

func (c *Command) run(ctx context.Context, log zerolog.Logger, run func(context.Context, Env) error) int {
	if *c.debugAddr != "" {
		debug, err := service.ListenDebug(*c.debugAddr, log)
		if err != nil {
			log.Error().Err(err).Msg("serving profiles")
			return 1
		}
		go func() {
			if err := debug.Run(ctx); err != nil {
				log.Warn().Err(err).Msg("serving profiles")
			}
		}()
	}
	c.nats.Log = log
	conn, err := broker.Connect(ctx, *c.nats)
	if err != nil {
		log.Error().Err(err).Msg("connecting to NATS")
		return 1
	}
	defer conn.Close()
	if c.provision != nil && *c.provision {
		if err := broker.Provision(ctx, conn.JS, *c.layout); err != nil {
			log.Error().Err(err).Msg("provisioning streams and buckets")
			return 1
		}
	}
	if err := run(ctx, Env{Log: log, Conn: conn, Registry: service.NewRegistry()}); err != nil {
		log.Error().Err(err).Msgf("%s stopped", c.name)
		return 1
	}
	log.Info().Msgf("%s stopped", c.name)
	return 0
}
