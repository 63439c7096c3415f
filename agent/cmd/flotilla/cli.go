package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/flotilla-io/flotilla/api"
)

// cli is what every subcommand shares: where output goes, the
// environment, the connection flags and the clock.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	now            func() time.Time
	version        string

	// Connection flags; empty means the environment's.
	addr, tokenFile, caCert string
	timeout                 time.Duration

	// addrSource says where the address came from, for error messages.
	addrSource string
}

// run executes the command line args and returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	return execute(ctx, &cli{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv, now: time.Now, version: version}, args)
}

// execute runs args with c.
func execute(ctx context.Context, c *cli, args []string) int {
	root := newRootCmd(c)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		var code exitCodeError
		if errors.As(err, &code) {
			return code.code
		}
		fmt.Fprintln(c.stderr, "Error:", c.explain(err))
		return 1
	}
	return 0
}

func newRootCmd(c *cli) *cobra.Command {
	root := &cobra.Command{
		Use:   "flotilla",
		Short: "Look into a Flotilla fleet: nodes, pods, deployments, services, logs and events",
		Long: `flotilla talks to any agent of a fleet through its API, as the Terraform provider does.

Connection (flags override the environment):
  FLOTILLA_ADDR    the agent's API, e.g. https://10.0.1.10:7400 (default ` + api.DefaultAddr + `)
  FLOTILLA_TOKEN   the API token (flotilla_cluster's api_token; a dev agent's <data-dir>/token)
  FLOTILLA_CACERT  the cluster CA an https API is verified against: a PEM file's path, or the PEM`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&c.addr, "addr", "", "agent API address (default $"+api.EnvAddr+", then "+api.DefaultAddr+")")
	pf.StringVar(&c.tokenFile, "token-file", "", "file holding the API token (default $"+api.EnvToken+")")
	pf.StringVar(&c.caCert, "cacert", "", "PEM file of the cluster CA for an https address (default $"+api.EnvCACert+")")
	pf.DurationVar(&c.timeout, "timeout", 30*time.Second, "how long to wait for the API to answer (not for logs -f)")
	root.AddCommand(
		newNodesCmd(c),
		newPodsCmd(c),
		newDeploymentsCmd(c),
		newServicesCmd(c),
		newDescribeCmd(c),
		newEventsCmd(c),
		newLogsCmd(c),
		newExecCmd(c),
		newCordonCmd(c),
		newUncordonCmd(c),
		newDrainCmd(c),
		newVersionCmd(c),
	)
	return root
}

// client builds the API client from the flags and the environment.
func (c *cli) client() (*api.Client, error) {
	cfg, err := api.ConfigFromEnv(c.getenv)
	if err != nil {
		return nil, err
	}
	c.addrSource = "$" + api.EnvAddr
	switch {
	case c.addr != "":
		cfg.Address, c.addrSource = c.addr, "--addr"
	case c.getenv(api.EnvAddr) == "":
		c.addrSource = "the default (" + api.EnvAddr + " is not set)"
	}
	if c.tokenFile != "" {
		if cfg.Token, err = api.ReadTokenFile(c.tokenFile); err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
	}
	if cfg.Token == "" {
		return nil, fmt.Errorf("no API token: set %s or pass --token-file (flotilla_cluster's api_token; a dev agent writes it to /var/lib/flotilla/token)", api.EnvToken)
	}
	if c.caCert != "" {
		if cfg.CACertPEM, err = api.ReadCACert(c.caCert); err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
	}
	cl, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w (from %s)", err, c.addrSource)
	}
	return cl, nil
}

// ctx bounds a request by --timeout.
func (c *cli) ctx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return context.WithTimeout(cmd.Context(), c.timeout)
}

// explain adds what to do to the errors a user can fix.
func (c *cli) explain(err error) error {
	var apiErr *api.Error
	var certErr *tls.CertificateVerificationError
	switch {
	case errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusUnauthorized:
		return fmt.Errorf("%w\nThe agent refused the token: set %s (or --token-file) to the fleet's API token", err, api.EnvToken)
	case errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusNotFound && apiErr.Message == "404 page not found":
		return fmt.Errorf("%w\nThe agent does not serve this request: is it older than this flotilla (%s)?", err, c.version)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w\nNothing answers at the address from %s: start the agent (make up), or set %s or --addr to a fleet agent's API", err, c.addrSource, api.EnvAddr)
	case errors.As(err, &certErr):
		return fmt.Errorf("%w\nA fleet's API certificates come from the cluster CA: set %s or --cacert to it", err, api.EnvCACert)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w\nThe agent did not answer within --timeout %s", err, c.timeout)
	}
	return err
}
