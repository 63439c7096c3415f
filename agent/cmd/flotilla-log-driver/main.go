// Command flotilla-log-driver is the log driver containerd's shim runs
// beside every container (binary:// logging): it copies the container's
// output into size-rotated files (package containerlog).
//
// flotilla-agent can be its own log driver (its hidden log-driver
// command), but a process of the agent's binary costs ~18 ms to start and
// ~4 MiB of private memory for the life of each container: the init of
// every package the agent links (containerd's clients, gRPC, protobuf,
// raft, Prometheus). This binary links only package containerlog. The
// agent uses it when it is installed beside flotilla-agent.
package main

import (
	"fmt"
	"os"

	"github.com/flotilla-io/flotilla/agent/containerlog"
)

func main() {
	// The shim's command line: <path> log-driver <settings>, as the
	// agent's own driver has it (containerlog.DriverArgs).
	if len(os.Args) < 2 || os.Args[1] != containerlog.DriverCommand {
		fmt.Fprintf(os.Stderr, "flotilla-log-driver: containerd's shim runs this for flotilla-agent as `%s %s <settings>`; it is not meant to be run by hand\n", os.Args[0], containerlog.DriverCommand)
		os.Exit(2)
	}
	os.Exit(containerlog.DriverMain(os.Args[2:]))
}
