package acceptance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/api"
	"github.com/flotilla-io/flotilla/internal/imagebuild"
)

const busyboxImage = "flotilla.local/busybox:acc"

// TestAccExec: `exec` into pods of a fleet of one server and one client,
// along each path a request can take: the server forwards an exec in the
// client's pod to the client over the agents' mTLS RPC and relays the
// WebSocket; the client proxies an exec in the server's pod to the server,
// which runs it itself. Exit codes, stdin, a terminal and the container's
// user come through each way.
func TestAccExec(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 1, 1)
	srv, cli := f.nodes[0], f.nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// A shell image, on the client only (images are imported per node).
	img, err := imagebuild.BuildBusybox(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(t.TempDir(), "busybox.tar")
	if err := imagebuild.WriteTarball(tarball, busyboxImage, img); err != nil {
		t.Fatal(err)
	}
	apiRetry(t, "import busybox on "+cli.Name, func(ctx context.Context) error {
		fh, err := os.Open(tarball)
		if err != nil {
			return err
		}
		defer fh.Close()
		_, err = cli.client.ImportImage(ctx, fh)
		return err
	})
	cordon := func(n *fleetNode, unschedulable bool) {
		apiRetry(t, fmt.Sprintf("cordon %s: %v", n.Name, unschedulable), func(ctx context.Context) error {
			_, err := srv.client.SetNodeSchedule(ctx, n.Name, api.NodeSchedule{Unschedulable: unschedulable})
			return err
		})
	}
	placed := func(dep string, on *fleetNode) api.Pod {
		var pod api.Pod
		waitUntil(t, 2*time.Minute, dep+" running on "+on.Name, func(ctx context.Context) error {
			pods, err := podsOn(ctx, srv, on.Name, dep)
			if err != nil || len(pods) != 1 || pods[0].Status.Phase != api.PodRunning {
				return fmt.Errorf("%s pods on %s: %+v (%v)", dep, on.Name, pods, err)
			}
			pod = pods[0]
			return nil
		})
		return pod
	}

	cordon(srv, true)
	uid := int64(4321)
	createSpec(t, srv, &api.Deployment{Namespace: api.DefaultNamespace, Name: "shell", Replicas: 1,
		Containers: []api.Container{{Name: "sh", Image: busyboxImage, Command: []string{"sleep", "3600"},
			Security: &api.Security{RunAsUser: &uid}}}})
	shell := placed("shell", cli)
	cordon(srv, false)
	cordon(cli, true)
	createSpec(t, srv, demoDeployment("demo", 1))
	demo := placed("demo", srv)

	exec := func(t *testing.T, via *fleetNode, pod string, opts api.ExecOptions, stdin io.Reader) (int, string, string) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		code, err := via.client.Exec(ctx, api.DefaultNamespace, pod, opts, stdin, &stdout, &stderr, nil)
		if err != nil {
			t.Fatalf("exec %q in %s through %s: %v (stdout %q, stderr %q)", opts.Command, pod, via.Name, err, stdout.String(), stderr.String())
		}
		return code, stdout.String(), stderr.String()
	}

	t.Run("a server forwards to the pod's node", func(t *testing.T) {
		if code, out, _ := exec(t, srv, shell.Name, api.ExecOptions{Command: []string{"sh", "-c", "id -u; exit 3"}}, nil); code != 3 || out != fmt.Sprintf("%d\n", uid) {
			t.Errorf("id -u; exit 3: exit code %d, output %q; want 3 and the container's uid %d", code, out, uid)
		}
		in := strings.Repeat("through the server to the client node\n", 2000)
		if code, out, _ := exec(t, srv, shell.Name, api.ExecOptions{Command: []string{"cat"}, Stdin: true}, strings.NewReader(in)); code != 0 || out != in {
			t.Errorf("cat: exit code %d, %d of %d bytes back", code, len(out), len(in))
		}
		code, out, errOut := exec(t, srv, shell.Name, api.ExecOptions{Command: []string{"tty"}, TTY: true}, nil)
		if code != 0 || !regexp.MustCompile(`^/dev/pts/\d+\r?\n$`).MatchString(out) || errOut != "" {
			t.Errorf("tty: exit code %d, output %q, stderr %q; want a /dev/pts path", code, out, errOut)
		}
	})
	t.Run("latency: forwarded by a server, and on the pod's own node", func(t *testing.T) {
		median := func(via *fleetNode) time.Duration {
			var ds []time.Duration
			for range 11 {
				start := time.Now()
				if code, _, _ := exec(t, via, shell.Name, api.ExecOptions{Command: []string{"true"}}, nil); code != 0 {
					t.Fatalf("true: exit code %d", code)
				}
				ds = append(ds, time.Since(start))
			}
			slices.Sort(ds)
			return ds[len(ds)/2]
		}
		fwd, local := median(srv), median(cli)
		t.Logf("exec of true, median of 11: %s through the server (forwarded to %s over RPC), %s on %s itself", fwd.Round(time.Millisecond), cli.Name, local.Round(time.Millisecond), cli.Name)
	})
	t.Run("a client proxies to a server, which runs its own pod's exec", func(t *testing.T) {
		// The demo's /app exits at once where its own copy holds the port.
		code, _, errOut := exec(t, cli, demo.Name, api.ExecOptions{Command: []string{"/app"}}, nil)
		if code != 1 || !strings.Contains(errOut, "address already in use") {
			t.Errorf("/app: exit code %d, stderr %q; want 1 and the bind error", code, errOut)
		}
	})
	t.Run("the flotilla CLI against the fleet, through either node", func(t *testing.T) {
		flotilla := func(via *fleetNode, stdin string, args ...string) (int, string) {
			t.Helper()
			cmd := osexec.CommandContext(ctx, env.cliBin, args...)
			cmd.Env = append(os.Environ(), api.EnvAddr+"="+via.endpoint(), api.EnvToken+"="+f.apiToken, api.EnvCACert+"="+string(f.caPEM))
			cmd.Stdin = strings.NewReader(stdin)
			out, err := cmd.CombinedOutput()
			var ee *osexec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Fatalf("flotilla %s: %v", strings.Join(args, " "), err)
			}
			return cmd.ProcessState.ExitCode(), string(out)
		}
		for _, via := range []*fleetNode{srv, cli} {
			if code, out := flotilla(via, "", "nodes"); code != 0 || !strings.Contains(out, srv.Name) || !strings.Contains(out, cli.Name) {
				t.Errorf("flotilla nodes through %s: %d\n%s", via.Name, code, out)
			}
			if code, out := flotilla(via, "", "pods", "-A", "-o", "wide"); code != 0 || !regexp.MustCompile(shell.Name+`\s.*\s`+cli.Name).MatchString(out) {
				t.Errorf("flotilla pods -A -o wide through %s does not show %s on %s: %d\n%s", via.Name, shell.Name, cli.Name, code, out)
			}
			if code, out := flotilla(via, "", "describe", "pod", shell.Name); code != 0 || !strings.Contains(out, "Scheduled") || !strings.Contains(out, "Started container sh") {
				t.Errorf("flotilla describe pod %s through %s: %d\n%s", shell.Name, via.Name, code, out)
			}
			if code, out := flotilla(via, "", "logs", "--tail", "5", demo.Name); code != 0 || !strings.Contains(out, "flotilla-demo version=") {
				t.Errorf("flotilla logs %s through %s: %d\n%s", demo.Name, via.Name, code, out)
			}
			if code, out := flotilla(via, "", "exec", shell.Name, "--", "sh", "-c", "echo from $(id -u); exit 5"); code != 5 || out != fmt.Sprintf("from %d\n", uid) {
				t.Errorf("flotilla exec through %s: exit code %d, output %q; want 5 and the container's uid", via.Name, code, out)
			}
			if code, out := flotilla(via, "piped in\n", "exec", "-i", shell.Name, "--", "cat"); code != 0 || out != "piped in\n" {
				t.Errorf("flotilla exec -i through %s: exit code %d, output %q", via.Name, code, out)
			}
		}
		if code, out := flotilla(cli, "", "uncordon", cli.Name); code != 0 || !strings.Contains(out, "uncordoned") {
			t.Errorf("flotilla uncordon: %d %s", code, out)
		}
		if code, out := flotilla(cli, "", "nodes"); code != 0 || regexp.MustCompile(cli.Name+`\s+\S*SchedulingDisabled`).MatchString(out) {
			t.Errorf("after uncordon, flotilla nodes: %d\n%s", code, out)
		}
		if code, out := flotilla(srv, "", "cordon", cli.Name); code != 0 || !strings.Contains(out, "cordoned") {
			t.Errorf("flotilla cordon: %d %s", code, out)
		}
		if code, out := flotilla(srv, "", "nodes"); code != 0 || !regexp.MustCompile(cli.Name+`\s+\S*SchedulingDisabled`).MatchString(out) {
			t.Errorf("after cordon, flotilla nodes does not show %s SchedulingDisabled: %d\n%s", cli.Name, code, out)
		}
	})
	t.Run("refusals name what to do", func(t *testing.T) {
		for _, via := range []*fleetNode{srv, cli} {
			_, err := via.client.Exec(ctx, api.DefaultNamespace, shell.Name, api.ExecOptions{Container: "nope", Command: []string{"true"}}, nil, nil, nil, nil)
			if !api.IsNotFound(err) || !strings.Contains(err.Error(), `has no container "nope"`) {
				t.Errorf("through %s, a container the pod lacks: %v", via.Name, err)
			}
			_, err = via.client.Exec(ctx, api.DefaultNamespace, shell.Name, api.ExecOptions{Command: []string{"/no/such/program"}}, nil, nil, nil, nil)
			var ae *api.Error
			if !errors.As(err, &ae) || ae.StatusCode != http.StatusBadRequest || !strings.Contains(ae.Message, "no such file or directory") {
				t.Errorf("through %s, a missing program: %v; want a 400 that says why", via.Name, err)
			}
		}
	})
}
