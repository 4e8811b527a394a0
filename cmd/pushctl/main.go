// Command pushctl is the operator's tool for pushproxy: it sets up S2S
// OAuth, enables the proxy, probes the relay, replays a user's events,
// redrives dead letters, and runs the whole system in one process
// (pushctl standalone).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushproxy/pushproxy/internal/version"
)

// command is one pushctl subcommand. run gets the arguments after its name.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, cli *cli, args []string) error
}

// cli is what a command may touch of the outside world; tests replace it.
type cli struct {
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
	// registry receives the metrics of pushctl standalone; nil: a new one.
	// Tests set it to see what the parts register.
	registry *prometheus.Registry
}

// errUsage marks an error in the command line; the exit code is 2.
var errUsage = errors.New("usage")

func commands() []command {
	return []command{
		standaloneCommand(),
		provisionCommand(),
		authCommand(),
		proxyCommand(),
		storageCommand(),
		probeCommand(),
		replayCommand(),
		dlqCommand(),
		subscriptionsCommand(),
		traceCommand(),
		reconcileCommand(),
		sourcesCommand(),
		credentialsCommand(),
		statusCommand(),
		relayCommand(),
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], &cli{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv})
	stop()
	os.Exit(code)
}

// run runs the command line args and returns the exit code: 0 on success,
// 1 when the command failed, 2 for a bad command line.
func run(ctx context.Context, args []string, c *cli) int {
	return dispatch(ctx, c, "pushctl", topUsage, commands(), args)
}

const topUsage = `pushctl is the operator's tool for pushproxy, the push notification proxy
that turns mailbox changes into unread-count badges on phones.

Run "pushctl COMMAND --help" for the flags of a command, "pushctl --version"
for the version. Every flag can also be set by an environment variable:
--nats-url is PUSHPROXY_NATS_URL.`

// dispatch runs the subcommand named by args[0] among cmds.
func dispatch(ctx context.Context, c *cli, path, about string, cmds []command, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printCommands(c.stdout, path, about, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if path == "pushctl" && (args[0] == "--version" || args[0] == "-version" || args[0] == "version") {
		fmt.Fprintln(c.stdout, version.String(path))
		return 0
	}
	for _, cmd := range cmds {
		if cmd.name != args[0] {
			continue
		}
		err := cmd.run(ctx, c, args[1:])
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errSilentUsage):
			return 2
		case errors.Is(err, errSilent):
			return 1
		case errors.Is(err, errUsage):
			fmt.Fprintf(c.stderr, "%s %s: %s\n", path, cmd.name, strings.TrimPrefix(oneLine(err), errUsage.Error()+": "))
			return 2
		default:
			fmt.Fprintf(c.stderr, "%s %s: %s\n", path, cmd.name, oneLine(err))
			return 1
		}
	}
	fmt.Fprintf(c.stderr, "%s: unknown command %q (run %s --help)\n", path, args[0], path)
	return 2
}

// group is a command made of subcommands, like "pushctl proxy enable".
func group(name, summary string, subs ...command) command {
	return command{name: name, summary: summary, run: func(ctx context.Context, c *cli, args []string) error {
		code := dispatch(ctx, c, "pushctl "+name, summary, subs, args)
		switch code {
		case 0:
			return nil
		case 2:
			return errSilentUsage
		default:
			return errSilent
		}
	}}
}

// errSilent and errSilentUsage report a failure that was already printed.
var (
	errSilent      = errors.New("failed")
	errSilentUsage = fmt.Errorf("%w: see --help", errUsage)
)

func printCommands(w io.Writer, path, about string, cmds []command) {
	fmt.Fprintf(w, "Usage: %s COMMAND [flags]\n\n%s\n\nCommands:\n", path, about)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, cmd := range cmds {
		fmt.Fprintf(tw, "  %s\t%s\n", cmd.name, cmd.summary)
	}
	tw.Flush()
}

// oneLine flattens an error to one line for the terminal.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
