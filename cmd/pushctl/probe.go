package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pushproxy/pushproxy/internal/probe"
)

func probeCommand() command {
	return command{name: "probe", summary: "run the connectivity probe against the relay (Invoke-MonitoringProbe)", run: runProbe}
}

// errProbeFailed is the error of a probe that ran and failed; the result
// block on stdout says why.
var errProbeFailed = errors.New("the connectivity probe failed")

func runProbe(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("probe", "pushctl probe [flags]", `
Runs the connectivity probe once, the equivalent of Exchange's
  Invoke-MonitoringProbe PushNotifications.Proxy\PushNotificationsEnterpriseConnectivityProbe
It reads the proxy settings, gets an S2S token and sends the monitoring
notification to the relay, which answers it without pushing to any device.
It prints ResultType (Succeeded or Failed), Error (what failed and what to
fix) and Exception (the underlying error), records the result in the PROBES
stream (pushctl status shows the last one), and exits with 1 on failure.`)
	certDir := fs.String("cert-dir", "", "folder of the S2S certificates (default: the one in the auth configuration)")
	timeout := fs.Duration("timeout", 15*time.Second, "how long to wait for the relay's answer")
	asJSON := fs.Bool("json", false, "print the result as JSON, with its failure class and latency")
	o := natsFlags(fs)
	if err := c.parse(fs, args); err != nil {
		return err
	}
	conn, store, err := openSettings(ctx, o)
	if err != nil {
		return err
	}
	defer conn.Close()
	r := probe.Run(ctx, probe.NewDeps(store, *certDir, *timeout))
	if *asJSON {
		err = printJSON(c.stdout, r)
	} else {
		err = r.Format(c.stdout)
	}
	if err != nil {
		return err
	}
	recordErr := probe.Publish(ctx, conn.JS, probe.SubjectConnectivity, r)
	if !r.Succeeded() {
		return fmt.Errorf("%w (%s)", errProbeFailed, r.Class)
	}
	if recordErr != nil {
		return fmt.Errorf("the probe succeeded but its result could not be recorded: %w", recordErr)
	}
	return nil
}
