package main

import (
	"context"
	"fmt"

	"github.com/pushproxy/pushproxy/internal/broker"
)

func provisionCommand() command {
	return command{
		name:    "provision",
		summary: "create or update the streams and buckets on a NATS deployment",
		run: func(ctx context.Context, c *cli, args []string) error {
			fs := c.newFlags("provision", "pushctl provision [flags]", `
Creates the streams (MAIL, PUSH_DEAD, PUSH_SENT, ADVISORIES, PROBES) and the
key-value buckets (unread, subscriptions, config) that pushproxy needs, or
updates them to the given settings. Running it again changes nothing. Use
--replicas 3 on a three-node cluster. On a cluster whose servers have just
started, a stream may find no peers to be placed on until each server has
reported in: it is tried again for up to 30 s.`)
			o := natsFlags(fs)
			layout := broker.LayoutFlags(fs)
			if err := c.parse(fs, args); err != nil {
				return err
			}
			if len(o.URLs) == 0 && !o.Embedded {
				o.URLs = []string{defaultNATSURL}
			}
			conn, err := broker.Connect(ctx, *o)
			if err != nil {
				return err
			}
			defer conn.Close()
			if err := broker.Provision(ctx, conn.JS, *layout); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "Provisioned streams and buckets (replicas %d, %d partitions).\n", layout.Replicas, layout.Partitions)
			return nil
		},
	}
}
