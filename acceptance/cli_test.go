package acceptance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/api"
)

// TestCLI runs the flotilla command line against a real dev agent: a pod
// the agent started is listed, described with its Scheduled and Started
// events, and its log printed; a pod whose container exits shows its
// restarts, exit code and Exited events, and its previous run's log.
func TestCLI(t *testing.T) {
	a := startAgent(t)
	ctx := context.Background()
	d := &api.Deployment{Namespace: "default", Name: "cli", Replicas: 1,
		Containers: []api.Container{{Name: "app", Image: image("v1"), Ports: []api.Port{{ContainerPort: 8080}}}}}
	if _, err := a.Client.CreateDeployment(ctx, d); err != nil {
		t.Fatal(err)
	}
	crash := &api.Deployment{Namespace: "default", Name: "crash", Replicas: 1,
		Containers: []api.Container{{Name: "app", Image: image("v1"), Env: map[string]string{"EXIT_CODE": "3"}}}}
	if _, err := a.Client.CreateDeployment(ctx, crash); err != nil {
		t.Fatal(err)
	}
	var pod api.Pod
	eventually(t, 60*time.Second, "the pod runs and is ready", func(ctx context.Context) error {
		pods, err := a.Client.ListPods(ctx, "default", "cli")
		if err != nil {
			return err
		}
		if len(pods) != 1 || !pods[0].Status.Ready {
			return fmt.Errorf("pods %+v", pods)
		}
		pod = pods[0]
		return nil
	})
	flotilla := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(env.cliBin, args...)
		cmd.Env = append(os.Environ(), api.EnvAddr+"=http://"+a.cfg.APIAddr, api.EnvToken+"="+a.token)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("flotilla %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	out := flotilla("pods", "-o", "wide")
	for _, want := range []string{"NAME", "READY", pod.Name, "1/1", "Running", pod.Status.IP, a.cfg.NodeName} {
		if !strings.Contains(out, want) {
			t.Errorf("flotilla pods -o wide does not show %q:\n%s", want, out)
		}
	}
	out = flotilla("describe", "pod", pod.Name)
	t.Logf("flotilla describe pod %s:\n%s", pod.Name, out)
	for _, want := range []string{"Name:", pod.Name, "Node:", a.cfg.NodeName, "Events:",
		"Scheduled", "Assigned default/" + pod.Name + " to node " + a.cfg.NodeName, "Started", "Started container app"} {
		if !strings.Contains(out, want) {
			t.Errorf("flotilla describe pod does not show %q:\n%s", want, out)
		}
	}
	out = flotilla("nodes")
	if !strings.Contains(out, a.cfg.NodeName) || !strings.Contains(out, "ready") {
		t.Errorf("flotilla nodes does not show the ready node %s:\n%s", a.cfg.NodeName, out)
	}
	out = flotilla("deployments")
	if !strings.Contains(out, "cli") || !strings.Contains(out, "1/1") {
		t.Errorf("flotilla deployments does not show cli 1/1:\n%s", out)
	}
	events, err := a.Client.ListEvents(ctx, "default", pod.Name)
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, e := range events {
		reasons = append(reasons, e.Reason)
	}
	if strings.Join(reasons, ",") != "Scheduled,Pulled,Started" {
		t.Errorf("GET /v1/namespaces/default/events?object=pod/%s: reasons %q, want Scheduled,Pulled,Started", pod.Name, reasons)
	}
	eventually(t, 20*time.Second, "flotilla logs shows the demo app's output", func(context.Context) error {
		cmd := exec.Command(env.cliBin, "logs", "--tail", "20", pod.Name)
		cmd.Env = append(os.Environ(), api.EnvAddr+"=http://"+a.cfg.APIAddr, api.EnvToken+"="+a.token)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "flotilla-demo version=") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})

	// exec: the command's exit code is flotilla's, its output comes
	// through, and stdin reaches it. The demo image has no shell: its own
	// binary, started again, cannot bind the port the first one holds.
	{
		cmd := exec.Command(env.cliBin, "exec", pod.Name, "--", "/app")
		cmd.Env = append(os.Environ(), api.EnvAddr+"=http://"+a.cfg.APIAddr, api.EnvToken+"="+a.token)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "address already in use") {
			t.Errorf("flotilla exec %s -- /app: %v, want exit code 1 and the bind error:\n%s", pod.Name, err, out)
		}
		cmd = exec.Command(env.cliBin, "exec", pod.Name, "--", "/does-not-exist")
		cmd.Env = append(os.Environ(), api.EnvAddr+"=http://"+a.cfg.APIAddr, api.EnvToken+"="+a.token)
		if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "Error:") {
			t.Errorf("flotilla exec of a missing program: %v, want an error line:\n%s", err, out)
		}
	}

	var crashed api.Pod
	eventually(t, 60*time.Second, "the crashing pod restarted", func(ctx context.Context) error {
		pods, err := a.Client.ListPods(ctx, "default", "crash")
		if err != nil {
			return err
		}
		if len(pods) != 1 || len(pods[0].Status.Containers) != 1 || pods[0].Status.Containers[0].RestartCount < 2 {
			return fmt.Errorf("pods %+v", pods)
		}
		crashed = pods[0]
		return nil
	})
	out = flotilla("describe", "pod", crashed.Name)
	t.Logf("flotilla describe pod %s:\n%s", crashed.Name, out)
	for _, want := range []string{"Last exit code:  3", "Exited", "Container app exited with code 3", "(x"} {
		if !strings.Contains(out, want) {
			t.Errorf("flotilla describe pod of a crashing pod does not show %q:\n%s", want, out)
		}
	}
	if out := flotilla("logs", "--previous", crashed.Name); !strings.Contains(out, "exiting with code 3") {
		t.Errorf("flotilla logs --previous does not show the last run's output:\n%s", out)
	}
	for _, name := range []string{"cli", "crash"} {
		if err := a.Client.DeleteDeployment(ctx, "default", name); err != nil {
			t.Fatal(err)
		}
	}
}
