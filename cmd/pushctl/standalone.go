package main

import (
	"context"
	"errors"
)

func standaloneCommand() command {
	return command{name: "standalone", summary: "run everything in one process on an embedded NATS server", run: func(context.Context, *cli, []string) error {
		return errors.New("standalone is being assembled")
	}}
}
