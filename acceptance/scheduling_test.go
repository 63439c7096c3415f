package acceptance

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/flotilla-io/flotilla/api"
)

// hugeMemory is more memory (MiB) than any machine of this kind has.
const hugeMemory = 64 << 20

// TestAccDeployment_unschedulableFailsWithReason: a deployment asking for
// more memory than any node has fails apply at once with the scheduler's
// account, and `terraform plan` warned about it first.
func TestAccDeployment_unschedulableFailsWithReason(t *testing.T) {
	t.Parallel()
	a := startAgent(t)
	extra := fmt.Sprintf("memory_request = %d\n    memory_limit = %d", hugeMemory, hugeMemory)
	cfg := strings.Replace(deploymentConfig(a, "huge", 2, image("v1"), ""), "memory_limit = 64", extra, 1)
	cfg = strings.Replace(cfg, `labels   = { app = "huge" }`, "labels   = { app = \"huge\" }\n  timeouts {\n    create = \"10m\"\n  }", 1)

	t.Run("plan warns that the replicas do not fit", func(t *testing.T) {
		out, err := terraformCLI(t, cfg, "plan")
		if err != nil {
			t.Fatalf("terraform plan failed; a capacity shortfall must only warn: %v\n%s", err, out)
		}
		flat := strings.Join(strings.Fields(out), " ") // terraform wraps long lines
		for _, want := range []string{"Warning: Not all replicas fit the fleet", "2 of 2 replicas do not fit", "0/1 nodes available: 1 insufficient memory"} {
			if !strings.Contains(flat, want) {
				t.Errorf("plan output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("apply fails at once with the constraint", func(t *testing.T) {
		start := time.Now()
		tfTest(t, resource.TestCase{
			ProtoV6ProviderFactories: factories(),
			CheckDestroy:             a.checkDestroyed,
			Steps: []resource.TestStep{{
				Config:      cfg,
				ExpectError: regexp.MustCompile(`(?s)cannot place.*0/1 nodes available: 1 insufficient memory`),
			}},
		})
		if took := time.Since(start); took > 2*time.Minute {
			t.Errorf("apply took %s to fail; the timeout was 10m, fail-fast should end it in seconds", took)
		}
	})
}

// TestAccDeployment_exitsAtOnceNeverReady: a container that exits with
// code 3 the moment it starts, with no port to probe, fails apply every
// time; before min_ready_seconds, half of the tries succeeded (the pod was
// seen running before it exited).
func TestAccDeployment_exitsAtOnceNeverReady(t *testing.T) {
	t.Parallel()
	a := startAgent(t)
	cfg := a.providerConfig() + fmt.Sprintf(`
resource "flotilla_deployment" "quitter" {
  name     = "quitter"
  replicas = 1
  container {
    name  = "app"
    image = %q
    env   = { EXIT_CODE = "3" }
  }
}
`, image("v1"))
	for i := range 3 {
		tfTest(t, resource.TestCase{
			ProtoV6ProviderFactories: factories(),
			CheckDestroy:             a.checkDestroyed,
			Steps: []resource.TestStep{{
				Config:      cfg,
				ExpectError: regexp.MustCompile(`(?s)crash-looping.*exited with code 3`),
			}},
		})
		t.Logf("try %d failed as it should", i+1)
	}
}

// TestAccDeployment_probes: a pod whose liveness probe fails is restarted
// (and says why); a pod failing its readiness probe is not counted ready.
func TestAccDeployment_probes(t *testing.T) {
	t.Parallel()
	a := startAgent(t)
	probe := func(kind, path string) string {
		return fmt.Sprintf(`%s {
      http_get {
        path = %q
        port = 8080
      }
      period_seconds    = 1
      failure_threshold = 2
    }`, kind, path)
	}
	cfg := deploymentConfig(a, "alive", 1, image("v1"), probe("liveness_probe", "/no-such-page")) +
		strings.Replace(strings.Replace(deploymentConfig(a, "unready", 2, image("v1"), probe("readiness_probe", "/no-such-page")),
			a.providerConfig(), "", 1), `labels   = { app = "unready" }`, "labels   = { app = \"unready\" }\n  wait_for_rollout = false", 1)
	cfg = strings.Replace(cfg, `labels   = { app = "alive" }`, "labels   = { app = \"alive\" }\n  wait_for_rollout = false", 1)

	restarted := func(*terraform.State) error {
		ctx := context.Background()
		var last string
		deadline := time.Now().Add(90 * time.Second)
		for time.Now().Before(deadline) {
			pods, err := livePods(ctx, a.Client, "alive")
			if err == nil && len(pods) == 1 && len(pods[0].Status.Containers) == 1 {
				c := pods[0].Status.Containers[0]
				last = fmt.Sprintf("restarts %d, reason %q, message %q", c.RestartCount, c.Reason, c.Message)
				if c.RestartCount >= 1 && strings.Contains(c.Message+pods[0].Status.Message, "liveness probe failed") {
					return nil
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
		return fmt.Errorf("the pod whose liveness probe fails was not restarted for it: %s", last)
	}
	notReady := func(*terraform.State) error {
		ctx := context.Background()
		// Well past the probe's first failures and the min ready time.
		time.Sleep(5 * time.Second)
		d, err := a.Client.GetDeployment(ctx, api.DefaultNamespace, "unready")
		if err != nil {
			return err
		}
		if d.Status.ReadyReplicas != 0 || d.Status.Complete {
			return fmt.Errorf("deployment counts %d ready replicas (complete %v) though its readiness probe fails", d.Status.ReadyReplicas, d.Status.Complete)
		}
		pods, err := livePods(ctx, a.Client, "unready")
		if err != nil {
			return err
		}
		for _, p := range pods {
			if p.Status.Phase != api.PodRunning || p.Status.Ready {
				return fmt.Errorf("pod %s: phase %s ready %v; want running and not ready", p.Name, p.Status.Phase, p.Status.Ready)
			}
		}
		return nil
	}
	tfTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories(),
		CheckDestroy:             a.checkDestroyed,
		Steps: []resource.TestStep{
			{Config: cfg, Check: resource.ComposeTestCheckFunc(restarted, notReady)},
			// A refresh shows the user what the API says: no ready replica.
			{Config: cfg, Check: resource.TestCheckResourceAttr("flotilla_deployment.unready", "status.ready_replicas", "0")},
		},
	})
}

// terraformCLI runs the real terraform binary with this repository's
// provider (dev_overrides) on config in a fresh directory: init is not
// needed with dev_overrides. It returns the combined output.
func terraformCLI(t *testing.T, config string, args ...string) (string, error) {
	t.Helper()
	main := "terraform {\n  required_providers {\n    flotilla = { source = \"flotilla-io/flotilla\" }\n  }\n}\n\n" + config
	return terraformDir(t, main, nil)(args...)
}

// terraformDir writes mainTF (a whole configuration, its terraform block
// included) into a fresh directory and returns a function that runs the
// real terraform there, with this repository's provider (dev_overrides)
// and env added to the environment; state stays between runs.
func terraformDir(t *testing.T, mainTF string, env []string) func(args ...string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "terraform-provider-flotilla"), ".")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build provider: %v\n%s", err, out)
	}
	rc := filepath.Join(dir, "terraformrc")
	rcText := fmt.Sprintf("provider_installation {\n  dev_overrides {\n    %q = %q\n  }\n  direct {}\n}\n", "registry.terraform.io/flotilla-io/flotilla", dir)
	if err := os.WriteFile(rc, []byte(rcText), 0o644); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "main.tf"), []byte(mainTF), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := os.Getenv("TF_ACC_TERRAFORM_PATH")
	if bin == "" {
		bin = "terraform"
	}
	return func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		flags := []string{"-no-color"}
		if len(args) > 0 && args[0] != "output" && args[0] != "show" {
			flags = append(flags, "-input=false")
		}
		cmd := exec.CommandContext(ctx, bin, append(args, flags...)...)
		cmd.Dir = work
		cmd.Env = append(append(os.Environ(), "TF_CLI_CONFIG_FILE="+rc, "CHECKPOINT_DISABLE=1", "TF_IN_AUTOMATION=1"), env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
}
