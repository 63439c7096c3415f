package acceptance

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/flotilla-io/flotilla/api"
	"github.com/flotilla-io/flotilla/provider"
)

func factories() map[string]func() (tfprotov6.ProviderServer, error) {
	return map[string]func() (tfprotov6.ProviderServer, error){
		"flotilla": providerserver.NewProtocol6WithError(provider.New("acc")()),
	}
}

// deploymentConfig is one demo deployment plus the data source a user would
// read its pod IPs from.
func deploymentConfig(a *testAgent, name string, replicas int, img, extra string) string {
	return a.providerConfig() + fmt.Sprintf(`
resource "flotilla_deployment" %[1]q {
  name     = %[1]q
  replicas = %[2]d
  labels   = { app = %[1]q }
  container {
    name  = "app"
    image = %[3]q
    port {
      container_port = 8080
    }
    cpu_limit    = 500
    memory_limit = 64
    %[4]s
  }
}

data "flotilla_pods" %[1]q {
  deployment = flotilla_deployment.%[1]s.name
  depends_on = [flotilla_deployment.%[1]s]
}
`, name, replicas, img, extra)
}

// livePods returns the deployment's pods that are not being stopped.
func livePods(ctx context.Context, c *api.Client, name string) ([]api.Pod, error) {
	pods, err := c.ListPods(ctx, api.DefaultNamespace, name)
	if err != nil {
		return nil, err
	}
	var live []api.Pod
	for _, p := range pods {
		if !p.Stop {
			live = append(live, p)
		}
	}
	return live, nil
}

// checkServing asserts what a user would: exactly n pods, each answering
// HTTP on its own IP with the expected version, and the data source lists them.
func (a *testAgent) checkServing(name string, n int, want string) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pods, err := livePods(ctx, a.Client, name)
		if err != nil {
			return err
		}
		if len(pods) != n {
			return fmt.Errorf("%d pods, want %d", len(pods), n)
		}
		seen := map[string]bool{}
		for _, p := range pods {
			if p.Status.IP == "" || seen[p.Status.IP] {
				return fmt.Errorf("pod %s has IP %q (duplicate or none)", p.Name, p.Status.IP)
			}
			seen[p.Status.IP] = true
			body, err := get(ctx, p.Status.IP)
			if err != nil {
				return fmt.Errorf("GET pod %s at %s: %w", p.Name, p.Status.IP, err)
			}
			if !strings.Contains(body, want) {
				return fmt.Errorf("pod %s answered %q, want %q in it", p.Name, body, want)
			}
		}
		ds := s.RootModule().Resources["data.flotilla_pods."+name]
		if ds == nil {
			return fmt.Errorf("data.flotilla_pods.%s not in state", name)
		}
		if got := ds.Primary.Attributes["ips.#"]; got != fmt.Sprint(n) {
			return fmt.Errorf("data source lists %s IPs, want %d", got, n)
		}
		return nil
	}
}

// checkMetric asserts the agent's /v1/metrics has a line, as a scraper would see it.
func (a *testAgent) checkMetric(line string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		text, err := a.Client.Metrics(context.Background())
		if err != nil {
			return err
		}
		for _, l := range strings.Split(text, "\n") {
			if l == line {
				return nil
			}
		}
		return fmt.Errorf("metrics lack %q", line)
	}
}

// checkDestroyed asserts destroy left no containers, netns or IPs.
func (a *testAgent) checkDestroyed(*terraform.State) error {
	if cs := a.containers(); len(cs) > 0 {
		return fmt.Errorf("%d containers left after destroy", len(cs))
	}
	if left := a.netnsLeft(); len(left) > 0 {
		return fmt.Errorf("network namespaces left after destroy: %v", left)
	}
	if ips := a.allocatedIPs(); len(ips) > 0 {
		return fmt.Errorf("pod IPs still allocated after destroy: %v", ips)
	}
	return nil
}

func TestAccDeployment_lifecycle(t *testing.T) {
	t.Parallel()
	a := startAgent(t)
	tfTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories(),
		CheckDestroy:             a.checkDestroyed,
		Steps: []resource.TestStep{
			{
				Config: deploymentConfig(a, "web", 3, image("v1"), ""),
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("flotilla_deployment.web", "id", "default/web"),
					resource.TestCheckResourceAttr("flotilla_deployment.web", "status.ready_replicas", "3"),
					a.checkServing("web", 3, "version=v1"),
					a.checkMetric("flotilla_pods_ready 3"),
				),
			},
			{Config: deploymentConfig(a, "web", 5, image("v1"), ""), Check: a.checkServing("web", 5, "version=v1")},
			{Config: deploymentConfig(a, "web", 1, image("v1"), ""), Check: a.checkServing("web", 1, "version=v1")},
			{
				Config: deploymentConfig(a, "web", 2, image("v2"), ""),
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("flotilla_deployment.web", plancheck.ResourceActionUpdate),
				}},
				Check: a.checkServing("web", 2, "version=v2"),
			},
			// Refresh, then the framework's own check that the plan is empty.
			{RefreshState: true},
			{
				ResourceName:            "flotilla_deployment.web",
				ImportState:             true,
				ImportStateId:           "default/web",
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"timeouts"},
			},
		},
	})
}

func TestAccDeployment_imageNotFoundFailsFast(t *testing.T) {
	t.Parallel()
	a := startAgent(t)
	// A 10-minute timeout: only the fail-fast path can end this step in time.
	cfg := deploymentConfig(a, "missing", 1, image("does-not-exist"), "") + `
`
	cfg = strings.Replace(cfg, `labels   = { app = "missing" }`, "labels   = { app = \"missing\" }\n  timeouts {\n    create = \"10m\"\n  }", 1)
	start := time.Now()
	tfTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories(),
		CheckDestroy:             a.checkDestroyed,
		Steps: []resource.TestStep{{
			Config:      cfg,
			ExpectError: regexp.MustCompile(`(?s)rollout of default/missing failed.*cannot be pulled.*not found`),
		}},
	})
	t.Logf("apply failed after %s (timeout was 10m)", time.Since(start).Round(time.Millisecond))
}

func TestAccDeployment_crashLoopFailsFastWithLogs(t *testing.T) {
	t.Parallel()
	a := startAgent(t)
	tfTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories(),
		CheckDestroy:             a.checkDestroyed,
		Steps: []resource.TestStep{{
			Config:      deploymentConfig(a, "crasher", 1, image("v1"), `env = { EXIT_CODE = "3" }`),
			ExpectError: regexp.MustCompile(`(?s)crash-looping.*exited with code 3.*exiting with code 3`),
		}},
	})
}

// A container that allocates past its memory limit is killed by the kernel;
// the apply fails fast saying so, with the limit.
func TestAccDeployment_oomKilledFailsFastWithLimit(t *testing.T) {
	t.Parallel()
	a := startAgent(t)
	tfTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories(),
		CheckDestroy:             a.checkDestroyed,
		Steps: []resource.TestStep{{
			// deploymentConfig's memory_limit is 64 MiB.
			Config:      deploymentConfig(a, "hog", 1, image("v1"), `env = { ALLOCATE_MIB = "256" }`),
			ExpectError: regexp.MustCompile(`(?s)rollout of default/hog failed.*killed\s+for\s+going\s+over\s+its\s+memory\s+limit\s+of\s+64\s+MiB\s+\(OOMKilled\)`),
		}},
	})
}

func TestAccDeployment_killedContainerServesAgain(t *testing.T) {
	t.Parallel()
	a := startAgent(t)
	kill := func(*terraform.State) error {
		cs := a.containers()
		if len(cs) != 1 || !cs[0].Running {
			return fmt.Errorf("want 1 running container, have %+v", cs)
		}
		if err := syscall.Kill(int(cs[0].Pid), syscall.SIGKILL); err != nil {
			return fmt.Errorf("kill container process %d: %w", cs[0].Pid, err)
		}
		var pod api.Pod
		eventually(t, 30*time.Second, "killed container serving again", func(ctx context.Context) error {
			pods, err := livePods(ctx, a.Client, "web")
			if err != nil || len(pods) != 1 {
				return fmt.Errorf("pods %v: %v", pods, err)
			}
			pod = pods[0]
			if c := pod.Status.Containers; len(c) != 1 || c[0].RestartCount < 1 {
				return fmt.Errorf("restart not counted yet: %+v", pod.Status)
			}
			_, err = get(ctx, pod.Status.IP)
			return err
		})
		if got := pod.Status.Containers[0].LastExitCode; got != 137 {
			return fmt.Errorf("last exit code %d, want 137 (SIGKILL)", got)
		}
		return nil
	}
	tfTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories(),
		CheckDestroy:             a.checkDestroyed,
		Steps: []resource.TestStep{
			{Config: deploymentConfig(a, "web", 1, image("v1"), ""), Check: resource.ComposeAggregateTestCheckFunc(a.checkServing("web", 1, "version=v1"), kill)},
			{Config: deploymentConfig(a, "web", 1, image("v1"), ""), PlanOnly: true},
		},
	})
}

// podSnapshot is what must survive an agent restart: pods by name with IP and container IDs.
func (a *testAgent) podSnapshot(t *testing.T) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pods, err := livePods(ctx, a.Client, "web")
	if err != nil {
		t.Fatalf("list pods: %v", err)
	}
	var lines []string
	for _, p := range pods {
		lines = append(lines, p.Name+"@"+p.Status.IP)
	}
	for _, c := range a.containers() {
		lines = append(lines, "container "+c.ID)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func TestAccAgentRestartAdoptsPods(t *testing.T) {
	t.Parallel()
	a := startAgent(t)
	cfg := deploymentConfig(a, "web", 2, image("v1"), "")
	var before string
	restart := func(sig syscall.Signal) func() {
		return func() {
			a.stop(sig)
			a.start()
		}
	}
	same := func(*terraform.State) error {
		// Give the restarted agent a few reconcile passes to do anything wrong.
		time.Sleep(3 * time.Second)
		if after := a.podSnapshot(t); after != before {
			return fmt.Errorf("pods or containers changed across the restart:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		return nil
	}
	empty := resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()}}
	tfTest(t, resource.TestCase{
		ProtoV6ProviderFactories: factories(),
		CheckDestroy:             a.checkDestroyed,
		Steps: []resource.TestStep{
			{Config: cfg, Check: resource.ComposeAggregateTestCheckFunc(a.checkServing("web", 2, "version=v1"),
				func(*terraform.State) error { before = a.podSnapshot(t); return nil })},
			// A crash: containerd and the shims live on; the agent adopts them.
			{PreConfig: restart(syscall.SIGKILL), Config: cfg, ConfigPlanChecks: empty,
				Check: resource.ComposeAggregateTestCheckFunc(same, a.checkServing("web", 2, "version=v1"))},
			// A clean stop takes containerd down too; the shims keep the containers running.
			{PreConfig: restart(syscall.SIGTERM), Config: cfg, ConfigPlanChecks: empty,
				Check: resource.ComposeAggregateTestCheckFunc(same, a.checkServing("web", 2, "version=v1"))},
		},
	})
}

func TestAccDeployment_invalidConfigFailsAtPlan(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, body, want string }{
		{"bad name", `name = "Web_1"`, `(?s)name.*lower-case`},
		{"bad port", `name = "web"`, `(?s)container_port`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			port := "8080"
			if tc.name == "bad port" {
				port = "70000"
			}
			resource.UnitTest(t, resource.TestCase{
				ProtoV6ProviderFactories: factories(),
				Steps: []resource.TestStep{{
					PlanOnly: true,
					Config: fmt.Sprintf(`
provider "flotilla" {
  address = "http://127.0.0.1:1"
  token   = "unused"
}
resource "flotilla_deployment" "x" {
  %s
  container {
    name  = "app"
    image = "demo:v1"
    port {
      container_port = %s
    }
  }
}`, tc.body, port),
					ExpectError: regexp.MustCompile(tc.want),
				}},
			})
		})
	}
}
