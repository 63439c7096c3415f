package provider

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-log/tflog"
)

// capacityCheckTimeout bounds the capacity check of a plan: an agent that
// does not answer by then only costs the warning, never a slow plan.
const capacityCheckTimeout = 5 * time.Second

// unschedulableHint says what to do about pods the fleet cannot place, in
// the plan's capacity warning and in the error of a rollout that fails so.
const unschedulableHint = "To make room, add nodes or free capacity, lower the containers' cpu_request or " +
	"memory_request, uncordon nodes, or relax node_selector, anti_affinity or host_port."

// warnCapacity asks the agent whether every replica of plan fits the
// fleet's free capacity now (POST /v1/capacity, which writes nothing) and
// adds a warning on replicas if not. It is advice, and a plan must not
// depend on it: it does nothing while any part of the spec or of the
// connection is unknown, and ignores every failure (provider not
// configured, agent unreachable or too old to know the endpoint).
func (r *deploymentResource) warnCapacity(ctx context.Context, plan *deploymentModel, diags *diag.Diagnostics) {
	if r.data == nil || !isKnown(plan.Replicas) || plan.Replicas.ValueInt64() == 0 ||
		connectionUnknown(plan.Connection) || (plan.Connection.IsNull() && r.data.client == nil) {
		return
	}
	if !allKnown(ctx, plan.Name, plan.Namespace, plan.Labels, plan.Containers, plan.NodeSelector, plan.Placement,
		plan.AntiAffinity, plan.MinReadySeconds, plan.SelfFencing) {
		return
	}
	client, _, ds := r.data.clientFor(ctx, plan.Connection)
	if ds.HasError() {
		return
	}
	spec, ds := plan.toAPI(ctx)
	if ds.HasError() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, capacityCheckTimeout)
	defer cancel()
	check, err := client.CheckCapacity(ctx, spec)
	if err != nil {
		tflog.Debug(ctx, "capacity check failed; planning without it", map[string]any{
			"deployment": deploymentID(spec.Namespace, spec.Name), "error": err.Error(),
		})
		return
	}
	if check.Placeable >= check.Replicas {
		return
	}
	msg := fmt.Sprintf("%d of %d replicas do not fit the fleet's free capacity now", check.Replicas-check.Placeable, check.Replicas)
	if reason := strings.TrimSpace(check.Reason); reason != "" {
		msg += ": " + reason
	}
	diags.AddAttributeWarning(path.Root("replicas"), "Not all replicas fit the fleet",
		fmt.Sprintf("%s — terraform apply will fail unless capacity frees up. %s", msg, unschedulableHint))
}

// allKnown reports whether every value, nested ones included, is known.
func allKnown(ctx context.Context, vs ...attr.Value) bool {
	for _, v := range vs {
		tv, err := v.ToTerraformValue(ctx)
		if err != nil || !tv.IsFullyKnown() {
			return false
		}
	}
	return true
}
