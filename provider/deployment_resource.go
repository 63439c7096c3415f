package provider

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/listvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/mapvalidator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64default"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/objectplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/flotilla-io/flotilla/api"
)

// Default timeouts of the timeouts block.
const (
	defaultCreateTimeout = 5 * time.Minute
	defaultUpdateTimeout = 5 * time.Minute
	defaultDeleteTimeout = 5 * time.Minute
)

var (
	_ resource.Resource                   = (*deploymentResource)(nil)
	_ resource.ResourceWithConfigure      = (*deploymentResource)(nil)
	_ resource.ResourceWithImportState    = (*deploymentResource)(nil)
	_ resource.ResourceWithModifyPlan     = (*deploymentResource)(nil)
	_ resource.ResourceWithValidateConfig = (*deploymentResource)(nil)
)

// NewDeploymentResource returns the flotilla_deployment resource.
func NewDeploymentResource() resource.Resource { return &deploymentResource{} }

// deploymentResource manages one deployment through the agent API.
type deploymentResource struct {
	data *providerData
}

func (r *deploymentResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_deployment"
}

func (r *deploymentResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	nonNegative := []validator.Int64{int64validator.AtLeast(0)}
	resp.Schema = schema.Schema{
		MarkdownDescription: "A replicated set of pods running the same containers. Changing the spec rolls the " +
			"pods over to it; by default Terraform waits for the rollout and fails as soon as the agent reports " +
			"that it cannot progress (image not found, crash loop).",
		Attributes: map[string]schema.Attribute{
			"id": idAttribute(),
			"name": nameAttribute(fmt.Sprintf("Name of the deployment, a lower-case DNS label of at most %d "+
				"characters (pod names add 11 characters to it). Changing it replaces the deployment.", api.MaxNameLen)),
			"namespace": namespaceAttribute("Namespace of the deployment. Defaults to `" + api.DefaultNamespace +
				"`. Changing it replaces the deployment."),
			"replicas": schema.Int64Attribute{
				MarkdownDescription: fmt.Sprintf("Number of pods, 0 to %d. Defaults to 1.", api.MaxReplicas),
				Optional:            true,
				Computed:            true,
				Default:             int64default.StaticInt64(1),
				Validators:          []validator.Int64{int64validator.Between(0, api.MaxReplicas)},
			},
			"labels": schema.MapAttribute{
				MarkdownDescription: "Labels of the deployment and its pods.",
				ElementType:         types.StringType,
				Optional:            true,
				Validators:          []validator.Map{labelsValidator{}},
			},
			"node_selector": schema.MapAttribute{
				MarkdownDescription: "Places the pods only on nodes that carry every one of these labels (see the " +
					"`labels` of [`flotilla_nodes`](../data-sources/nodes.md)), e.g. `{ disk = \"ssd\" }`. Pods that " +
					"no node can take make the rollout fail.",
				ElementType: types.StringType,
				Optional:    true,
				Validators:  []validator.Map{labelsValidator{}},
			},
			"placement": schema.StringAttribute{
				MarkdownDescription: "How the scheduler ranks the nodes that can take a pod: `" + api.PlacementSpread +
					"` spreads the replicas across nodes and zones (node label `" + api.TopologyZone + "`), so losing " +
					"one takes as few as possible; `" + api.PlacementBinPack + "` fills the most loaded nodes first, " +
					"keeping others free for large pods. Defaults to `" + api.PlacementSpread + "`.",
				Optional:   true,
				Computed:   true,
				Default:    stringdefault.StaticString(api.PlacementSpread),
				Validators: []validator.String{stringvalidator.OneOf(api.PlacementSpread, api.PlacementBinPack)},
			},
			"min_ready_seconds": schema.Int64Attribute{
				MarkdownDescription: fmt.Sprintf("How long the containers of a pod must have run before the pod "+
					"counts as ready, 0 to %d, so that a container that exits the moment it starts is never seen "+
					"ready. Pods with a `readiness_probe` in any container ignore it: the probe decides. Defaults "+
					"to %d.", api.MaxProbeSeconds, api.DefaultMinReadySeconds),
				Optional:   true,
				Computed:   true,
				Default:    int64default.StaticInt64(api.DefaultMinReadySeconds),
				Validators: []validator.Int64{int64validator.Between(0, api.MaxProbeSeconds)},
			},
			"self_fencing": schema.BoolAttribute{
				MarkdownDescription: "Whether a node cut off from the servers for longer than the cluster's " +
					"lost-node grace stops this deployment's pods on it. The servers replace a lost node's pods only " +
					"that grace after the node was marked failed, which is after its last contact, so the cut-off " +
					"copies are down before their replacements start: a replica never runs twice (for singletons, " +
					"leaders, writers of shared storage). Defaults to `false` because with it on, an outage of the " +
					"servers alone, every node healthy, stops every pod of such deployments in the fleet until the " +
					"servers are back.",
				Optional: true,
				Computed: true,
				Default:  booldefault.StaticBool(false),
			},
			"wait_for_rollout": schema.BoolAttribute{
				MarkdownDescription: "Wait on create and update until every replica runs the new spec and is " +
					"ready, failing early if the agent reports the rollout as failed. Defaults to `true`.",
				Optional: true,
				Computed: true,
				Default:  booldefault.StaticBool(true),
			},
			"generation": schema.Int64Attribute{
				MarkdownDescription: "Spec generation; the agent increments it on every change of the spec.",
				Computed:            true,
				PlanModifiers:       []planmodifier.Int64{int64planmodifier.UseStateForUnknown()},
			},
			"api_connection": resourceConnectionAttribute(" On create with an `api_connection`, the provider first waits " +
				"(up to the create timeout) for the fleet to answer and elect a leader, as its VMs may still be booting. " +
				"When the connection changes (e.g. the cluster was replaced), the next apply creates the deployment on " +
				"the new fleet if it is not there."),
			"status": schema.SingleNestedAttribute{
				MarkdownDescription: "Rollout status as of the last apply or refresh. Only becomes unknown in a " +
					"plan when the spec or the connection changes.",
				Computed:      true,
				PlanModifiers: []planmodifier.Object{objectplanmodifier.UseStateForUnknown()},
				Attributes: map[string]schema.Attribute{
					"replicas": schema.Int64Attribute{
						MarkdownDescription: "Pods of the deployment, of any generation.",
						Computed:            true,
					},
					"ready_replicas": schema.Int64Attribute{
						MarkdownDescription: "Ready pods, of any generation.",
						Computed:            true,
					},
					"updated_replicas": schema.Int64Attribute{
						MarkdownDescription: "Pods running the current spec.",
						Computed:            true,
					},
				},
			},
		},
		Blocks: map[string]schema.Block{
			"anti_affinity": schema.ListNestedBlock{
				MarkdownDescription: fmt.Sprintf("Keeps the pods away from nodes (or zones) that run pods carrying "+
					"given labels, this deployment's own included when they match its `labels`: e.g. one replica per "+
					"node. At most %d blocks.", api.MaxAntiAffinity),
				Validators: []validator.List{listvalidator.SizeAtMost(api.MaxAntiAffinity)},
				NestedObject: schema.NestedBlockObject{
					Attributes: map[string]schema.Attribute{
						"labels": schema.MapAttribute{
							MarkdownDescription: "Selects the pods to stay away from: a pod matches when it carries " +
								"every one of these labels. At least one.",
							ElementType: types.StringType,
							Required:    true,
							Validators:  []validator.Map{mapvalidator.SizeAtLeast(1), labelsValidator{}},
						},
						"required": schema.BoolAttribute{
							MarkdownDescription: "`true` makes the rule hard: a pod is never placed where a matching " +
								"pod runs, and stays unplaced if no node qualifies (which fails the rollout). `false` " +
								"makes it a preference weighed against spreading. Defaults to `false`.",
							Optional: true,
							Computed: true,
							Default:  booldefault.StaticBool(false),
						},
						"topology": schema.StringAttribute{
							MarkdownDescription: "`node` (the default) or a node label key such as `" + api.TopologyZone +
								"`: with a label key, matching pods anywhere among the nodes with the same value of " +
								"that label count, e.g. one replica per zone.",
							Optional:   true,
							Validators: []validator.String{topologyValidator{}},
						},
					},
				},
			},
			"container": schema.ListNestedBlock{
				MarkdownDescription: "A container of each pod; at least one is required. Containers of a pod share its IP and network namespace.",
				Validators:          []validator.List{listvalidator.IsRequired(), listvalidator.SizeAtLeast(1)},
				NestedObject: schema.NestedBlockObject{
					Attributes: map[string]schema.Attribute{
						"name": schema.StringAttribute{
							MarkdownDescription: "Name of the container, unique in the deployment; a lower-case DNS label.",
							Required:            true,
							Validators:          []validator.String{nameValidator{}},
						},
						"image": schema.StringAttribute{
							MarkdownDescription: "Image reference, e.g. `registry.example.com/web:1.4`.",
							Required:            true,
							Validators:          []validator.String{imageValidator{}},
						},
						"command": schema.ListAttribute{
							MarkdownDescription: "Replaces the image's entrypoint.",
							ElementType:         types.StringType,
							Optional:            true,
						},
						"args": schema.ListAttribute{
							MarkdownDescription: "Replaces the image's command (the arguments of the entrypoint).",
							ElementType:         types.StringType,
							Optional:            true,
						},
						"env": schema.MapAttribute{
							MarkdownDescription: "Environment variables.",
							ElementType:         types.StringType,
							Optional:            true,
							Validators:          []validator.Map{mapvalidator.KeysAre(envNameValidator{})},
						},
						"cpu_request": schema.Int64Attribute{
							MarkdownDescription: "CPU reserved for scheduling, in millicores (1000 = one core).",
							Optional:            true,
							Validators:          nonNegative,
						},
						"cpu_limit": schema.Int64Attribute{
							MarkdownDescription: "CPU limit in millicores; 0 or unset means none. Must not be below `cpu_request`.",
							Optional:            true,
							Validators:          nonNegative,
						},
						"memory_request": schema.Int64Attribute{
							MarkdownDescription: "Memory reserved for scheduling, in MiB.",
							Optional:            true,
							Validators:          nonNegative,
						},
						"memory_limit": schema.Int64Attribute{
							MarkdownDescription: fmt.Sprintf("Memory limit in MiB; 0 or unset means none, otherwise at least %d. "+
								"Must not be below `memory_request`.", minMemoryLimitMiB),
							Optional:   true,
							Validators: []validator.Int64{int64validator.AtLeast(0), memoryLimitValidator{}},
						},
						"pids_limit": pidsLimitAttribute(),
					},
					Blocks: map[string]schema.Block{
						"port": schema.ListNestedBlock{
							MarkdownDescription: "A port the container listens on. A port/protocol pair may appear " +
								"once per deployment, as the containers of a pod share one network namespace.",
							NestedObject: schema.NestedBlockObject{
								Attributes: map[string]schema.Attribute{
									"container_port": schema.Int64Attribute{
										MarkdownDescription: "Port number, 1 to 65535.",
										Required:            true,
										Validators:          []validator.Int64{int64validator.Between(1, 65535)},
									},
									"protocol": schema.StringAttribute{
										MarkdownDescription: "`tcp` or `udp`. Defaults to `tcp`.",
										Optional:            true,
										Computed:            true,
										Default:             stringdefault.StaticString(defaultProtocol),
										Validators:          []validator.String{stringvalidator.OneOf("tcp", "udp")},
									},
									"name": schema.StringAttribute{
										MarkdownDescription: "Name of the port, for reference by services.",
										Optional:            true,
									},
									"host_port": schema.Int64Attribute{
										MarkdownDescription: "Also forward this port of the node's addresses to the pod, " +
											"1 to 65535. Only one pod per node can hold a host port and protocol, so " +
											"replicas of a deployment with a host port land on different nodes and no " +
											"more of them run than there are nodes with the port free.",
										Optional:   true,
										Validators: []validator.Int64{int64validator.Between(1, 65535)},
									},
								},
							},
						},
						"liveness_probe":  probeBlock(true),
						"readiness_probe": probeBlock(false),
						"security":        securityBlock(),
					},
				},
			},
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true, Update: true, Delete: true}),
		},
	}
}

func (r *deploymentResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	configureData(req.ProviderData, &r.data, &resp.Diagnostics)
}

// ValidateConfig checks what single-attribute validators cannot: names,
// ports and host ports unique across containers, requests within limits. It mirrors
// api.Deployment.Validate so every error the agent would return shows up at
// plan time, with the attribute path.
func (r *deploymentResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var containers types.List
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("container"), &containers)...)
	if resp.Diagnostics.HasError() {
		return
	}
	names := map[string]path.Path{}
	ports := map[string]path.Path{}
	resp.Diagnostics.Append(containersOf(ctx, containers, func(i int, c containerModel) {
		p := path.Root("container").AtListIndex(i)
		if isKnown(c.Name) {
			name := c.Name.ValueString()
			if other, dup := names[name]; dup {
				resp.Diagnostics.AddAttributeError(p.AtName("name"), "Duplicate container name",
					fmt.Sprintf("%s: %q is used by another container of this deployment (%s)", p.AtName("name"), name, other))
			} else {
				names[name] = p.AtName("name")
			}
		}
		checkRequestLimit(&resp.Diagnostics, p.AtName("cpu_request"), c.CPURequest, c.CPULimit, "%dm exceeds cpu_limit %dm")
		checkRequestLimit(&resp.Diagnostics, p.AtName("memory_request"), c.MemoryRequest, c.MemoryLimit, "%d MiB exceeds memory_limit %d MiB")
		resp.Diagnostics.Append(portsOf(ctx, c.Ports, func(j int, port portModel) {
			if !isKnown(port.ContainerPort) || port.Protocol.IsUnknown() {
				return
			}
			proto := port.Protocol.ValueString()
			if proto == "" {
				proto = defaultProtocol
			}
			if isKnown(port.HostPort) {
				hp := p.AtName("port").AtListIndex(j).AtName("host_port")
				key := fmt.Sprintf("host %d/%s", port.HostPort.ValueInt64(), proto)
				if other, dup := ports[key]; dup {
					resp.Diagnostics.AddAttributeError(hp, "Duplicate host port",
						fmt.Sprintf("%s: %d/%s is also declared by %s", hp, port.HostPort.ValueInt64(), proto, other))
				} else {
					ports[key] = hp
				}
			}
			pp := p.AtName("port").AtListIndex(j).AtName("container_port")
			key := fmt.Sprintf("%d/%s", port.ContainerPort.ValueInt64(), proto)
			if other, dup := ports[key]; dup {
				resp.Diagnostics.AddAttributeError(pp, "Duplicate port",
					fmt.Sprintf("%s: %s is also declared by %s; containers of a pod share one network namespace", pp, key, other))
				return
			}
			ports[key] = pp
		})...)
	})...)
}

// checkRequestLimit reports a request (at p) above its limit; a limit of 0
// means none, as in the API.
func checkRequestLimit(diags *diag.Diagnostics, p path.Path, req, lim types.Int64, format string) {
	if !isKnown(req) || !isKnown(lim) || lim.ValueInt64() <= 0 || req.ValueInt64() <= lim.ValueInt64() {
		return
	}
	diags.AddAttributeError(p, "Request exceeds limit", fmt.Sprintf("%s: "+format, p, req.ValueInt64(), lim.ValueInt64()))
}

// ModifyPlan marks the server-computed attributes unknown when, and only
// when, the spec or the connection changes: UseStateForUnknown keeps them
// otherwise, so a plan without changes stays empty and a change of
// wait_for_rollout or timeouts does not promise a new generation.
//
// For a create, or an update that changes what decides whether the pods
// fit, it also asks the agent whether they do (warnCapacity), and warns if
// not. That is the only call to the agent it makes, and nothing about it
// can fail the plan.
func (r *deploymentResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.Plan.Raw.IsNull() {
		return // destroy
	}
	var plan deploymentModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if req.State.Raw.IsNull() {
		r.warnCapacity(ctx, &plan, &resp.Diagnostics)
		return
	}
	var state deploymentModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() || (specEqual(&plan, &state) && plan.Connection.Equal(state.Connection)) {
		return
	}
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("status"), types.ObjectUnknown(statusAttrTypes))...)
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("generation"), types.Int64Unknown())...)
	if schedulingChanged(&plan, &state) {
		r.warnCapacity(ctx, &plan, &resp.Diagnostics)
	}
}

// deploymentAPI is how flotilla_deployment reaches its deployment. One the
// agent is still deleting is gone for Terraform; a 409 on create is always
// the deployment existing (create waits out one being deleted).
func deploymentAPI() apiObject[api.Deployment] {
	return apiObject[api.Deployment]{
		kind:     "deployment",
		key:      func(d *api.Deployment) (string, string) { return d.Namespace, d.Name },
		get:      (*api.Client).GetDeployment,
		create:   (*api.Client).CreateDeployment,
		update:   (*api.Client).UpdateDeployment,
		delete:   (*api.Client).DeleteDeployment,
		deleting: func(d *api.Deployment) bool { return d.Deleting },
	}
}

func (r *deploymentResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan deploymentModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	o := deploymentAPI()
	op, ok := startWrite(ctx, r.data, plan.Connection, plan.Timeouts.Create, defaultCreateTimeout, plan.toAPI, &resp.Diagnostics)
	if !ok {
		return
	}
	opCtx, cancel := context.WithTimeout(ctx, op.timeout)
	defer cancel()
	w := waiter{client: op.client, every: r.data.poll()}
	if !o.fleetReady(opCtx, r.data, op, "create", &resp.Diagnostics) {
		return
	}
	created, err := r.create(opCtx, w, op.spec, op.timeout)
	if err != nil {
		resp.Diagnostics.Append(o.createError(opCtx, op.client, op.spec, err)...)
		return
	}
	plan.setComputed(created)
	// Save now: if the wait below fails, Terraform taints the resource
	// instead of forgetting a deployment that exists.
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
	if resp.Diagnostics.HasError() || !plan.WaitForRollout.ValueBool() {
		return
	}
	r.waitRollout(ctx, opCtx, w, &plan, created.Generation, op.timeout, "create", &resp.State, &resp.Diagnostics)
}

// create creates spec. A deployment of the same name that is still being
// deleted (e.g. by a replacement, or outside Terraform) is waited for first.
func (r *deploymentResource) create(ctx context.Context, w waiter, spec *api.Deployment, timeout time.Duration) (*api.Deployment, error) {
	created, err := w.client.CreateDeployment(ctx, spec)
	if !api.IsConflict(err) {
		return created, err
	}
	existing, gerr := w.client.GetDeployment(ctx, spec.Namespace, spec.Name)
	if gerr != nil || !existing.Deleting {
		return nil, err
	}
	tflog.Info(ctx, "a deployment of the same name is being deleted; waiting for it to be gone",
		map[string]any{"deployment": deploymentID(spec.Namespace, spec.Name)})
	if err := w.gone(ctx, spec.Namespace, spec.Name, timeout); err != nil {
		return nil, fmt.Errorf("a previous deployment of that name is still being deleted: %w", err)
	}
	return w.client.CreateDeployment(ctx, spec)
}

// waitRollout waits for the rollout of m and saves its last status into
// state, also when the rollout fails or times out.
func (r *deploymentResource) waitRollout(ctx, opCtx context.Context, w waiter, m *deploymentModel, minGen uint64, timeout time.Duration, op string, state *tfsdk.State, diags *diag.Diagnostics) {
	last, err := w.rollout(opCtx, m.Namespace.ValueString(), m.Name.ValueString(), minGen, timeout, op)
	if last != nil {
		m.setComputed(last)
		diags.Append(state.Set(ctx, m)...)
	}
	switch {
	case errors.Is(err, errRolloutFailed):
		diags.AddError("Rollout failed", strings.TrimPrefix(err.Error(), errRolloutFailed.Error()+": "))
	case err != nil:
		diags.AddError("Rollout did not complete", err.Error())
	}
}

func (r *deploymentResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state deploymentModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	d := deploymentAPI().read(ctx, r.data, state.Connection, state.Namespace.ValueString(), state.Name.ValueString(), resp)
	if d != nil {
		setFlat(ctx, flattenDeployment, d, &state, &resp.State, &resp.Diagnostics)
	}
}

func (r *deploymentResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state deploymentModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	connChanged := !plan.Connection.Equal(state.Connection)
	if specEqual(&plan, &state) && !connChanged {
		// Only wait_for_rollout or timeouts changed: nothing to send.
		resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
		return
	}
	o := deploymentAPI()
	op, ok := startWrite(ctx, r.data, plan.Connection, plan.Timeouts.Update, defaultUpdateTimeout, plan.toAPI, &resp.Diagnostics)
	if !ok {
		return
	}
	opCtx, cancel := context.WithTimeout(ctx, op.timeout)
	defer cancel()
	w := waiter{client: op.client, every: r.data.poll()}

	if connChanged {
		// Another fleet, or new credentials for the same one: a replaced
		// cluster does not have the deployment yet, and may still boot.
		if !o.fleetReady(opCtx, r.data, op, "update", &resp.Diagnostics) {
			return
		}
		if done := r.moveTo(ctx, opCtx, w, &plan, op.spec, op.timeout, resp); done {
			return
		}
	}

	updated, err := o.update(op.client, opCtx, op.spec)
	if err != nil {
		resp.Diagnostics.Append(o.updateError(o.id(op.spec), err))
		return
	}
	plan.setComputed(updated)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
	if resp.Diagnostics.HasError() || !plan.WaitForRollout.ValueBool() {
		return
	}
	r.waitRollout(ctx, opCtx, w, &plan, updated.Generation, op.timeout, "update", &resp.State, &resp.Diagnostics)
}

// moveTo handles an update whose connection changed: if the fleet it now
// points at lacks the deployment, it creates it there. It reports whether
// the update is done; false means the caller sends the spec as usual.
func (r *deploymentResource) moveTo(ctx, opCtx context.Context, w waiter, plan *deploymentModel, spec *api.Deployment, timeout time.Duration, resp *resource.UpdateResponse) bool {
	id := deploymentID(spec.Namespace, spec.Name)
	o := deploymentAPI()
	existing, err := o.get(w.client, opCtx, spec.Namespace, spec.Name)
	switch {
	case o.gone(existing, err):
		tflog.Info(ctx, "the deployment is not on the fleet api_connection now points at; creating it there",
			map[string]any{"deployment": id, "endpoint": w.client.Address()})
		created, err := r.create(opCtx, w, spec, timeout)
		if err != nil {
			resp.Diagnostics.AddError("Could not create deployment", fmt.Sprintf("create deployment %s on %s: %s", id, w.client.Address(), err))
			return true
		}
		plan.setComputed(created)
		resp.Diagnostics.Append(resp.State.Set(ctx, plan)...)
		if !resp.Diagnostics.HasError() && plan.WaitForRollout.ValueBool() {
			r.waitRollout(ctx, opCtx, w, plan, created.Generation, timeout, "update", &resp.State, &resp.Diagnostics)
		}
		return true
	case err != nil:
		resp.Diagnostics.Append(o.readAtError(w.client, id, err))
		return true
	}
	// It is there: sending the spec makes it ours (the agent starts no
	// rollout if the pod template is the same).
	return false
}

func (r *deploymentResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state deploymentModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	client, _, diags := r.data.clientFor(ctx, state.Connection)
	resp.Diagnostics.Append(diags...)
	timeout, diags := state.Timeouts.Delete(ctx, defaultDeleteTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	opCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ns, name := state.Namespace.ValueString(), state.Name.ValueString()
	if !deploymentAPI().remove(opCtx, client, ns, name, &resp.Diagnostics) {
		return
	}
	w := waiter{client: client, every: r.data.poll()}
	if err := w.gone(opCtx, ns, name, timeout); err != nil {
		resp.Diagnostics.AddError("Deployment not removed", err.Error())
	}
}

// ImportState accepts "namespace/name" or "name" (namespace "default"). Read
// fills in the rest; wait_for_rollout gets its default and timeouts stay
// null, as they would be for a configuration that does not set them.
func (r *deploymentResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	if importNamespacedID(ctx, req, resp) {
		resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("wait_for_rollout"), true)...)
	}
}
