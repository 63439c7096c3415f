// Command flotilla is the Flotilla command line: it lists and describes
// what a fleet runs and shows pods' logs and events, through the agent API
// the Terraform provider uses. main only wires; each subcommand is one
// file with a newXCmd(*cli) constructor.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// version is set by the build (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
