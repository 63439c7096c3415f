package provider

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-go/tftypes"
	tfresource "github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/flotilla-io/flotilla/api"
)

const unplaceable = "0/5 nodes available: 3 insufficient memory, 2 cordoned"

// modifyPlan runs the resource's ModifyPlan for a create (state nil) or an
// update of state to plan, and returns its diagnostics.
func modifyPlan(t *testing.T, r *deploymentResource, plan, state *api.Deployment) diag.Diagnostics {
	t.Helper()
	ctx := context.Background()
	var sresp resource.SchemaResponse
	r.Schema(ctx, resource.SchemaRequest{}, &sresp)
	s := sresp.Schema
	value := func(d *api.Deployment) tftypes.Value {
		if d == nil {
			return tftypes.NewValue(s.Type().TerraformType(ctx), nil)
		}
		m, diags := flattenDeployment(ctx, d, importStub())
		if diags.HasError() {
			t.Fatalf("flatten: %v", diags)
		}
		st := tfsdk.State{Schema: s, Raw: tftypes.NewValue(s.Type().TerraformType(ctx), nil)}
		if diags := st.Set(ctx, &m); diags.HasError() {
			t.Fatalf("set: %v", diags)
		}
		return st.Raw
	}
	req := resource.ModifyPlanRequest{
		Plan:  tfsdk.Plan{Schema: s, Raw: value(plan)},
		State: tfsdk.State{Schema: s, Raw: value(state)},
	}
	req.Config = tfsdk.Config{Schema: s, Raw: req.Plan.Raw}
	resp := &resource.ModifyPlanResponse{Plan: req.Plan}
	r.ModifyPlan(ctx, req, resp)
	return resp.Diagnostics
}

func capacityDeployment(replicas int, image string) *api.Deployment {
	return &api.Deployment{Namespace: "default", Name: "web", Replicas: replicas,
		Containers: []api.Container{{Name: "web", Image: image, MemoryRequest: 512}}}
}

// TestDeploymentResource_capacityWarning checks the plan's capacity
// warning: there when the replicas do not fit, absent when they do, and
// never an error, whatever the capacity check does.
func TestDeploymentResource_capacityWarning(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	client, err := api.NewClient(&api.Config{Address: f.URL, Token: f.Token})
	if err != nil {
		t.Fatal(err)
	}
	down, err := api.NewClient(&api.Config{Address: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	web := capacityDeployment
	tests := []struct {
		name        string
		data        *providerData
		capacity    func(api.Deployment) (int, api.CapacityCheck)
		plan, state *api.Deployment
		wantCheck   bool   // whether the agent is asked
		want        string // the warning; "" for none
	}{
		{name: "create, does not fit", capacity: placeable(3, unplaceable), plan: web(6, "v1"), wantCheck: true,
			want: "3 of 6 replicas do not fit the fleet's free capacity now: " + unplaceable +
				" — terraform apply will fail unless capacity frees up. " + unschedulableHint},
		{name: "create, no reason given", capacity: placeable(0, ""), plan: web(2, "v1"), wantCheck: true,
			want: "2 of 2 replicas do not fit the fleet's free capacity now — terraform apply will fail unless capacity frees up."},
		{name: "create, fits", capacity: placeable(6, ""), plan: web(6, "v1"), wantCheck: true},
		{name: "update of replicas, does not fit", capacity: placeable(4, unplaceable), plan: web(6, "v1"), state: web(4, "v1"),
			wantCheck: true, want: "2 of 6 replicas do not fit"},
		{name: "update of containers, does not fit", capacity: placeable(4, unplaceable), plan: web(6, "v2"), state: web(6, "v1"),
			wantCheck: true, want: "2 of 6 replicas do not fit"},
		{name: "update of node_selector", capacity: placeable(0, unplaceable), wantCheck: true, want: "1 of 1 replicas",
			plan: &api.Deployment{Namespace: "default", Name: "web", Replicas: 1, NodeSelector: map[string]string{"disk": "ssd"},
				Containers: []api.Container{{Name: "web", Image: "v1"}}},
			state: web(1, "v1")},
		{name: "update of anti_affinity", capacity: placeable(0, unplaceable), wantCheck: true, want: "1 of 1 replicas",
			plan: &api.Deployment{Namespace: "default", Name: "web", Replicas: 1,
				AntiAffinity: []api.AntiAffinity{{Labels: map[string]string{"app": "web"}, Required: true}},
				Containers:   []api.Container{{Name: "web", Image: "v1"}}},
			state: web(1, "v1")},
		{name: "update of labels only", capacity: placeable(0, unplaceable), state: web(6, "v1"),
			plan: &api.Deployment{Namespace: "default", Name: "web", Replicas: 6, Labels: map[string]string{"a": "b"},
				Containers: []api.Container{{Name: "web", Image: "v1", MemoryRequest: 512}}}},
		{name: "no change", capacity: placeable(0, unplaceable), plan: web(6, "v1"), state: web(6, "v1")},
		{name: "no replicas", capacity: placeable(0, unplaceable), plan: web(0, "v1")},
		{name: "agent fails", capacity: capacityFails(http.StatusInternalServerError), plan: web(6, "v1"), wantCheck: true},
		{name: "agent predates the check", plan: web(6, "v1"), wantCheck: true},
		{name: "agent unreachable", data: &providerData{client: down}, capacity: placeable(0, unplaceable), plan: web(6, "v1")},
		{name: "provider not configured", data: &providerData{}, capacity: placeable(0, unplaceable), plan: web(6, "v1")},
		{name: "provider address unknown", data: &providerData{configUnknown: true}, capacity: placeable(0, unplaceable), plan: web(6, "v1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// One fake for all: the cases run one after the other.
			f.setCapacity(tt.capacity)
			before := len(f.capacityChecks())
			r := &deploymentResource{data: tt.data}
			if r.data == nil {
				r.data = &providerData{client: client}
			}
			diags := modifyPlan(t, r, tt.plan, tt.state)
			if diags.HasError() {
				t.Fatalf("errors: %v", diags)
			}
			if asked := len(f.capacityChecks()) > before; asked != tt.wantCheck {
				t.Errorf("agent asked: %v, want %v", asked, tt.wantCheck)
			}
			if tt.want == "" {
				if len(diags) != 0 {
					t.Errorf("want no diagnostics, got %v", diags)
				}
				return
			}
			if len(diags) != 1 || diags.WarningsCount() != 1 {
				t.Fatalf("want one warning, got %v", diags)
			}
			w := diags[0]
			if p, ok := w.(diag.DiagnosticWithPath); !ok || !p.Path().Equal(path.Root("replicas")) {
				t.Errorf("warning not on replicas: %v", w)
			}
			if !strings.Contains(w.Detail(), tt.want) {
				t.Errorf("warning %q does not contain %q", w.Detail(), tt.want)
			}
		})
	}
	// The agent was asked about the planned deployment.
	checks := f.capacityChecks()
	if got := checks[0]; got.Name != "web" || got.Replicas != 6 || got.Containers[0].MemoryRequest != 512 {
		t.Errorf("first capacity check asked about %+v", got)
	}
}

// TestDeploymentResource_capacityWarningUnknown does not ask the agent while
// the planned deployment is not fully known.
func TestDeploymentResource_capacityWarningUnknown(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	f.setCapacity(placeable(0, unplaceable))
	client, err := api.NewClient(&api.Config{Address: f.URL, Token: f.Token})
	if err != nil {
		t.Fatal(err)
	}
	r := &deploymentResource{data: &providerData{client: client}}
	ctx := context.Background()
	m, diags := flattenDeployment(ctx, capacityDeployment(3, "v1"), importStub())
	if diags.HasError() {
		t.Fatal(diags)
	}
	unknownImage := m
	unknownImage.Containers = types.ListUnknown(containerObjectType)
	unknownConn := m
	unknownConn.Connection = types.ObjectUnknown(connectionAttrTypes)
	for name, plan := range map[string]deploymentModel{"containers": unknownImage, "api_connection": unknownConn} {
		var diags diag.Diagnostics
		r.warnCapacity(ctx, &plan, &diags)
		if len(diags) != 0 {
			t.Errorf("%s unknown: diagnostics %v", name, diags)
		}
	}
	if n := len(f.capacityChecks()); n != 0 {
		t.Errorf("agent asked %d times about a deployment not known yet", n)
	}
}

// TestDeploymentResource_capacityPlan runs the check through terraform: a
// plan that does not fit still applies (the warning is no error), and the
// agent is asked only when the plan changes what decides the fit.
func TestDeploymentResource_capacityPlan(t *testing.T) {
	t.Parallel()
	f := newFakeAgent(t)
	f.setCapacity(placeable(1, unplaceable))
	config := func(replicas int, extra string) string {
		return providerConfig(f) + fmt.Sprintf(`
resource "flotilla_deployment" "web" {
  name     = "web"
  replicas = %d
  %s
  container {
    name           = "web"
    image          = "nginx"
    memory_request = 512
  }
}
`, replicas, extra)
	}
	asked := func(n int) tfresource.TestCheckFunc {
		return func(*terraform.State) error {
			if got := f.count("POST /v1/capacity"); got != n {
				return fmt.Errorf("%d capacity checks, want %d", got, n)
			}
			return nil
		}
	}
	var checksBefore int
	tfresource.UnitTest(t, tfresource.TestCase{
		ProtoV6ProviderFactories: providerFactories(nil),
		CheckDestroy:             checkGone(f, "default/web"),
		Steps: []tfresource.TestStep{
			{
				Config: config(3, ""),
				Check: func(s *terraform.State) error {
					checksBefore = f.count("POST /v1/capacity")
					if checksBefore == 0 {
						return fmt.Errorf("the plan did not check capacity")
					}
					return nil
				},
			},
			{
				// Only Terraform-side settings change: no check.
				Config: config(3, "wait_for_rollout = false"),
				Check:  func(s *terraform.State) error { return asked(checksBefore)(s) },
			},
			{
				Config: config(2, "wait_for_rollout = false"),
				ConfigPlanChecks: tfresource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(webAddr, plancheck.ResourceActionUpdate),
				}},
				Check: func(*terraform.State) error {
					if f.count("POST /v1/capacity") == checksBefore {
						return fmt.Errorf("scaling did not check capacity")
					}
					return nil
				},
			},
		},
	})
}
