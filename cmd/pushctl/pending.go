package main

import (
	"context"
	"errors"
)

// Commands whose files are being written; each moves to its own file.

var errPending = errors.New("this command is not in this build yet")

func pending(name, summary string) command {
	return command{name: name, summary: summary, run: func(context.Context, *cli, []string) error { return errPending }}
}

func probeCommand() command {
	return pending("probe", "run the connectivity probe against the relay")
}
func replayCommand() command {
	return pending("replay", "replay a user's events for debugging")
}
func dlqCommand() command { return pending("dlq", "list, show, redrive or purge dead letters") }
func subscriptionsCommand() command {
	return pending("subscriptions", "list or remove device subscriptions")
}
func statusCommand() command {
	return pending("status", "streams, consumers, workers and the last probe")
}
func relayCommand() command { return pending("relay", "manage the relay's partners and apps") }
