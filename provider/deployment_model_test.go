package provider

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/flotilla-io/flotilla/api"
)

// importStub is the prior state of a read after import: nothing but IDs.
func importStub() *deploymentModel {
	return &deploymentModel{Timeouts: timeouts.Value{Object: types.ObjectNull(map[string]attr.Type{
		"create": types.StringType, "update": types.StringType, "delete": types.StringType,
	})}}
}

// TestDeploymentModelRoundTrip maps deployments as the agent returns them
// to state and back: what goes back is what came, up to the API's own
// equivalences (defaults spelled out or left zero).
func TestDeploymentModelRoundTrip(t *testing.T) {
	ctx := context.Background()
	one, zero, sixty := 1, 0, 60
	full := wantSched()
	tests := []struct {
		name string
		in   api.Deployment
		want func(d *api.Deployment) // from in; nil: in itself
	}{
		{name: "every option", in: full},
		{name: "none", in: api.Deployment{Namespace: "default", Name: "web", Replicas: 1,
			Containers: []api.Container{{Name: "web", Image: "nginx"}}}},
		{name: "security", in: wantLocked()},
		{name: "empty security", in: api.Deployment{Namespace: "default", Name: "web", Replicas: 1,
			Containers: []api.Container{{Name: "web", Image: "nginx", Security: &api.Security{}}}}},
		{name: "min ready", in: api.Deployment{Namespace: "default", Name: "web", Replicas: 1, MinReadySeconds: &sixty,
			Containers: []api.Container{{Name: "web", Image: "nginx"}}}},
		{name: "min ready zero", in: api.Deployment{Namespace: "default", Name: "web", Replicas: 1, MinReadySeconds: &zero,
			Containers: []api.Container{{Name: "web", Image: "nginx"}}}},
		{
			name: "defaults spelled out",
			in: api.Deployment{Namespace: "default", Name: "web", Replicas: 1, Placement: api.PlacementSpread, MinReadySeconds: &one,
				AntiAffinity: []api.AntiAffinity{{Labels: map[string]string{"a": "b"}, Topology: "node"}},
				Containers: []api.Container{{Name: "web", Image: "nginx", ReadinessProbe: &api.Probe{
					HTTPGet: &api.HTTPGetProbe{Port: 80}, PeriodSeconds: 10, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 3,
				}}}},
			want: func(d *api.Deployment) {
				d.Placement, d.MinReadySeconds = "", nil
				d.AntiAffinity[0].Topology = ""
				d.Containers[0].ReadinessProbe.HTTPGet.Path = "/"
			},
		},
		{
			name: "probe defaults left zero",
			in: api.Deployment{Namespace: "default", Name: "web", Replicas: 1,
				Containers: []api.Container{{Name: "web", Image: "nginx", LivenessProbe: &api.Probe{TCPSocket: &api.TCPSocketProbe{Port: 80}}}}},
			want: func(d *api.Deployment) {
				p := d.Containers[0].LivenessProbe.WithDefaults()
				d.Containers[0].LivenessProbe = &p
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, _ := json.Marshal(tt.in)
			var want api.Deployment
			_ = json.Unmarshal(in, &want)
			if tt.want != nil {
				tt.want(&want)
			}
			m, diags := flattenDeployment(ctx, &tt.in, importStub())
			if diags.HasError() {
				t.Fatalf("flatten: %v", diags)
			}
			got, diags := m.toAPI(ctx)
			if diags.HasError() {
				t.Fatalf("toAPI: %v", diags)
			}
			if !reflect.DeepEqual(*got, want) {
				a, _ := json.Marshal(got)
				b, _ := json.Marshal(want)
				t.Errorf("round trip gave\n%s\nwant\n%s", a, b)
			}
			// A second read with the first as prior state changes nothing.
			again, diags := flattenDeployment(ctx, &tt.in, &m)
			if diags.HasError() {
				t.Fatalf("flatten again: %v", diags)
			}
			if !reflect.DeepEqual(again, m) {
				t.Errorf("second read differs:\n%+v\nfirst:\n%+v", again, m)
			}
		})
	}
}

// TestAntiAffinityTopologyKeepsSpelling keeps "node" and null apart as the
// configuration has them, although the API may answer either as "".
func TestAntiAffinityTopologyKeepsSpelling(t *testing.T) {
	ctx := context.Background()
	prior := func(topology types.String) types.List {
		return types.ListValueMust(antiAffinityObjectType, []attr.Value{types.ObjectValueMust(antiAffinityAttrTypes, map[string]attr.Value{
			"labels":   types.MapValueMust(types.StringType, map[string]attr.Value{"a": types.StringValue("b")}),
			"required": types.BoolValue(false),
			"topology": topology,
		})})
	}
	for _, tt := range []struct {
		api   string
		prior types.String
		want  types.String
	}{
		{"", types.StringNull(), types.StringNull()},
		{"", types.StringValue("node"), types.StringValue("node")},
		{"node", types.StringNull(), types.StringNull()},
		{"node", types.StringValue("node"), types.StringValue("node")},
		{"zone", types.StringNull(), types.StringValue("zone")},
		{"zone", types.StringValue("node"), types.StringValue("zone")},
		{"", types.StringValue("zone"), types.StringNull()},
	} {
		l, diags := antiAffinityValue(ctx, []api.AntiAffinity{{Labels: map[string]string{"a": "b"}, Topology: tt.api}}, prior(tt.prior))
		if diags.HasError() {
			t.Fatal(diags)
		}
		got := l.Elements()[0].(types.Object).Attributes()["topology"]
		if !got.Equal(tt.want) {
			t.Errorf("api %q, prior %s: topology %s, want %s", tt.api, tt.prior, got, tt.want)
		}
	}
}
