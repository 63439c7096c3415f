package provider

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/flotilla-io/flotilla/api"
)

// This file holds what flotilla_deployment, flotilla_service and
// flotilla_ingress do alike with their "namespace/name" objects: reaching
// the fleet, reading with a 404 as "gone", the diagnostics of failed calls,
// and import. The model mapping, and what a kind does on its own (a
// deployment's rollout wait), stay in the resource.

// namespacedID is the resource ID and import ID: "namespace/name".
func namespacedID(ns, name string) string { return ns + "/" + name }

// apiObject is how a resource reaches its kind of object through the API
// client. The functions take the client first, so that method expressions
// such as (*api.Client).GetIngress fit.
type apiObject[T any] struct {
	// kind names the object in diagnostics and logs, and makes the
	// resource type in hints: "ingress" is flotilla_ingress.
	kind   string
	key    func(*T) (ns, name string)
	get    func(c *api.Client, ctx context.Context, ns, name string) (*T, error)
	create func(c *api.Client, ctx context.Context, spec *T) (*T, error)
	update func(c *api.Client, ctx context.Context, spec *T) (*T, error)
	delete func(c *api.Client, ctx context.Context, ns, name string) error
	// deleting, if set, tells an object the agent is still deleting: for
	// Terraform it is gone already.
	deleting func(*T) bool
	// takenSummary and takenHint, if set, explain a 409 on create when the
	// object is not there: another object holds something it asks for (an
	// address, a host), which the agent's message names. Unset, a 409
	// always means the object exists already.
	takenSummary, takenHint string
}

func (o apiObject[T]) id(obj *T) string { return namespacedID(o.key(obj)) }

// gone reports whether a get's answer means the object is not there.
func (o apiObject[T]) gone(obj *T, err error) bool {
	return api.IsNotFound(err) || (err == nil && o.deleting != nil && o.deleting(obj))
}

// read is Read up to the model mapping: it returns the object, or nil when
// Read is done, having kept the state (the provider's address is not known
// yet), removed it (the object is gone) or reported an error.
func (o apiObject[T]) read(ctx context.Context, d *providerData, conn types.Object, ns, name string, resp *resource.ReadResponse) *T {
	id := namespacedID(ns, name)
	if conn.IsNull() && d != nil && d.configUnknown {
		// The agent's address is only known after apply (e.g. the cluster
		// is being replaced): keep the state as it is rather than fail the plan.
		tflog.Warn(ctx, "provider address or token unknown; skipping refresh", map[string]any{o.kind: id})
		return nil
	}
	client, _, diags := d.clientFor(ctx, conn)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return nil
	}
	obj, err := o.get(client, ctx, ns, name)
	if o.gone(obj, err) {
		// Deleted outside Terraform: the plan will create it again.
		tflog.Warn(ctx, o.kind+" is gone; removing it from state", map[string]any{o.kind: id})
		resp.State.RemoveResource(ctx)
		return nil
	}
	if err != nil {
		resp.Diagnostics.AddError("Could not read "+o.kind, fmt.Sprintf("read %s %s: %s", o.kind, id, err))
		return nil
	}
	return obj
}

// write is what Create and Update need once the plan is read.
type write[T any] struct {
	client *api.Client
	// explicit: the resource's own api_connection, whose fleet may still boot.
	explicit bool
	spec     *T
	timeout  time.Duration
}

// startWrite gets the client for conn, the operation's timeout (timeout is
// the plan's Timeouts.Create or .Update) and the spec. false means diags
// has an error.
func startWrite[T any](ctx context.Context, d *providerData, conn types.Object,
	timeout func(context.Context, time.Duration) (time.Duration, diag.Diagnostics), def time.Duration,
	toAPI func(context.Context) (*T, diag.Diagnostics), diags *diag.Diagnostics,
) (write[T], bool) {
	var w write[T]
	var ds diag.Diagnostics
	w.client, w.explicit, ds = d.clientFor(ctx, conn)
	diags.Append(ds...)
	w.timeout, ds = timeout(ctx, def)
	diags.Append(ds...)
	w.spec, ds = toAPI(ctx)
	diags.Append(ds...)
	return w, !diags.HasError()
}

// stateSetter is the state Create, Read and Update answer with.
type stateSetter interface {
	Set(context.Context, any) diag.Diagnostics
}

// setFlat stores obj in st as flatten maps it, with prior for what the API
// does not return.
func setFlat[T, M any](ctx context.Context, flatten func(context.Context, *T, *M) (M, diag.Diagnostics), obj *T, prior *M, st stateSetter, diags *diag.Diagnostics) {
	m, ds := flatten(ctx, obj, prior)
	diags.Append(ds...)
	if diags.HasError() {
		return
	}
	diags.Append(st.Set(ctx, &m)...)
}

// fleetReady waits for the fleet of an explicit connection to answer: it
// may be created in this apply, its VMs still booting. op is "create" or
// "update"; false means the fleet did not answer in time.
func (o apiObject[T]) fleetReady(ctx context.Context, d *providerData, w write[T], op string, diags *diag.Diagnostics) bool {
	if !w.explicit {
		return true
	}
	if err := waitForFleet(ctx, w.client, d.poll()); err != nil {
		diags.AddError("Fleet not reachable", fmt.Sprintf("%s %s %s: %s", op, o.kind, o.id(w.spec), err))
		return false
	}
	return true
}

// createOn is Create's call to the agent, after the fleet of an explicit
// connection answers. nil means diags says why.
func (o apiObject[T]) createOn(ctx context.Context, d *providerData, w write[T], diags *diag.Diagnostics) *T {
	if !o.fleetReady(ctx, d, w, "create", diags) {
		return nil
	}
	out, err := o.create(w.client, ctx, w.spec)
	if err != nil {
		diags.Append(o.createError(ctx, w.client, w.spec, err)...)
		return nil
	}
	return out
}

// createError explains a failed create of spec.
func (o apiObject[T]) createError(ctx context.Context, client *api.Client, spec *T, err error) diag.Diagnostics {
	var diags diag.Diagnostics
	ns, name := o.key(spec)
	id := namespacedID(ns, name)
	if !api.IsConflict(err) {
		diags.AddError("Could not create "+o.kind, fmt.Sprintf("create %s %s: %s", o.kind, id, err))
		return diags
	}
	if o.takenSummary != "" {
		if _, gerr := o.get(client, ctx, ns, name); gerr != nil {
			diags.AddError(o.takenSummary, fmt.Sprintf("create %s %s: %s. %s", o.kind, id, err, o.takenHint))
			return diags
		}
	}
	diags.AddError(strings.ToUpper(o.kind[:1])+o.kind[1:]+" already exists", fmt.Sprintf(
		"%s %s exists already; import it with terraform import flotilla_%s.NAME %s "+
			"(NAME is this resource's name in your configuration), or choose another name or namespace", o.kind, id, o.kind, id))
	return diags
}

// readAtError reports a failed read at the fleet an update moves to.
func (o apiObject[T]) readAtError(client *api.Client, id string, err error) diag.Diagnostic {
	return diag.NewErrorDiagnostic("Could not read "+o.kind, fmt.Sprintf("read %s %s at %s: %s", o.kind, id, client.Address(), err))
}

// updateError reports a failed update.
func (o apiObject[T]) updateError(id string, err error) diag.Diagnostic {
	detail := fmt.Sprintf("update %s %s: %s", o.kind, id, err)
	if api.IsNotFound(err) {
		detail += "; it was deleted outside Terraform: run terraform apply again to create it"
	}
	return diag.NewErrorDiagnostic("Could not update "+o.kind, detail)
}

// apply is Update's call to the agent. After a change of connection
// (moved: another fleet, or new credentials for the same one) it waits for
// an explicit connection's fleet, and creates the object there if that
// fleet lacks it, as a replaced cluster does. nil means diags says why.
func (o apiObject[T]) apply(ctx context.Context, d *providerData, w write[T], moved bool, diags *diag.Diagnostics) *T {
	ns, name := o.key(w.spec)
	id := namespacedID(ns, name)
	if moved {
		if !o.fleetReady(ctx, d, w, "update", diags) {
			return nil
		}
		_, err := o.get(w.client, ctx, ns, name)
		switch {
		case api.IsNotFound(err):
			tflog.Info(ctx, "the "+o.kind+" is not on the fleet api_connection now points at; creating it there",
				map[string]any{o.kind: id, "endpoint": w.client.Address()})
			out, err := o.create(w.client, ctx, w.spec)
			if err != nil {
				diags.Append(o.createError(ctx, w.client, w.spec, err)...)
				return nil
			}
			return out
		case err != nil:
			diags.Append(o.readAtError(w.client, id, err))
			return nil
		}
	}
	out, err := o.update(w.client, ctx, w.spec)
	if err != nil {
		diags.Append(o.updateError(id, err))
		return nil
	}
	return out
}

// remove deletes the object at client; one already gone is not an error.
// false means diags has the error.
func (o apiObject[T]) remove(ctx context.Context, client *api.Client, ns, name string, diags *diag.Diagnostics) bool {
	if err := o.delete(client, ctx, ns, name); err != nil && !api.IsNotFound(err) {
		diags.AddError("Could not delete "+o.kind, fmt.Sprintf("delete %s %s: %s", o.kind, namespacedID(ns, name), err))
		return false
	}
	return true
}

// destroy is Delete of an object that is gone once the agent answers.
func (o apiObject[T]) destroy(ctx context.Context, d *providerData, conn types.Object, ns, name string, diags *diag.Diagnostics) {
	client, _, ds := d.clientFor(ctx, conn)
	diags.Append(ds...)
	if diags.HasError() {
		return
	}
	o.remove(ctx, client, ns, name, diags)
}

// modelParts are the attributes every namespaced resource's model has, and
// its mapping to the API object.
type modelParts[T any] struct {
	conn     types.Object
	ns, name string
	timeouts timeouts.Value
	toAPI    func(context.Context) (*T, diag.Diagnostics)
}

// plainResource is a resource of model M whose object T is written in one
// call, with nothing to wait for after it: flotilla_service and
// flotilla_ingress embed it for their Metadata, Configure, Create, Read,
// Update, Delete and ImportState, and add their schema and validation.
type plainResource[M, T any] struct {
	api   apiObject[T]
	data  *providerData
	parts func(*M) modelParts[T]
	// flatten maps the agent's answer to the model, prior giving what the
	// API does not return.
	flatten func(ctx context.Context, obj *T, prior *M) (M, diag.Diagnostics)
	// specEqual reports whether two models ask the agent for the same
	// object; timeouts and api_connection only change what Terraform does.
	specEqual func(a, b *M) bool
}

func (c *plainResource[M, T]) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_" + c.api.kind
}

func (c *plainResource[M, T]) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	configureData(req.ProviderData, &c.data, &resp.Diagnostics)
}

// ImportState accepts "namespace/name" or "name" (namespace "default").
// Read fills in the rest; timeouts and api_connection stay null, as they
// would be for a configuration that does not set them.
func (c *plainResource[M, T]) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	importNamespacedID(ctx, req, resp)
}

func (c *plainResource[M, T]) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan M
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	p := c.parts(&plan)
	w, ok := startWrite(ctx, c.data, p.conn, p.timeouts.Create, defaultCreateTimeout, p.toAPI, &resp.Diagnostics)
	if !ok {
		return
	}
	opCtx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	if created := c.api.createOn(opCtx, c.data, w, &resp.Diagnostics); created != nil {
		setFlat(ctx, c.flatten, created, &plan, &resp.State, &resp.Diagnostics)
	}
}

func (c *plainResource[M, T]) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state M
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	p := c.parts(&state)
	if obj := c.api.read(ctx, c.data, p.conn, p.ns, p.name, resp); obj != nil {
		setFlat(ctx, c.flatten, obj, &state, &resp.State, &resp.Diagnostics)
	}
}

func (c *plainResource[M, T]) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state M
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	p := c.parts(&plan)
	connChanged := !p.conn.Equal(c.parts(&state).conn)
	if c.specEqual(&plan, &state) && !connChanged {
		// Only timeouts changed: nothing to send.
		resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
		return
	}
	w, ok := startWrite(ctx, c.data, p.conn, p.timeouts.Update, defaultUpdateTimeout, p.toAPI, &resp.Diagnostics)
	if !ok {
		return
	}
	opCtx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	if out := c.api.apply(opCtx, c.data, w, connChanged, &resp.Diagnostics); out != nil {
		setFlat(ctx, c.flatten, out, &plan, &resp.State, &resp.Diagnostics)
	}
}

func (c *plainResource[M, T]) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state M
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	p := c.parts(&state)
	c.api.destroy(ctx, c.data, p.conn, p.ns, p.name, &resp.Diagnostics)
}

// importNamespacedID is ImportState for an ID "namespace/name" or "name"
// (namespace "default"): it sets id, namespace and name, and Read fills in
// the rest. false means the ID is invalid.
func importNamespacedID(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) bool {
	ns, name, ok := strings.Cut(req.ID, "/")
	if !ok {
		ns, name = api.DefaultNamespace, req.ID
	}
	for _, part := range []struct{ what, v string }{{"namespace", ns}, {"name", name}} {
		if err := api.ValidateName(part.v); err != nil {
			resp.Diagnostics.AddError("Invalid import ID", fmt.Sprintf(
				"import ID %q must be namespace/name or name (namespace %s): %s %s", req.ID, api.DefaultNamespace, part.what, err))
			return false
		}
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), namespacedID(ns, name))...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("namespace"), ns)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("name"), name)...)
	return true
}

// configureData is Configure of a resource or data source: it keeps the
// provider's data in *dst once the provider is configured.
func configureData(providerData any, dst **providerData, diags *diag.Diagnostics) {
	d, ds := providerDataFrom(providerData)
	diags.Append(ds...)
	if d != nil {
		*dst = d
	}
}

// idAttribute is the computed "namespace/name" id of a namespaced resource.
func idAttribute() schema.StringAttribute {
	return schema.StringAttribute{
		MarkdownDescription: "`namespace/name`; also the import ID.",
		Computed:            true,
		PlanModifiers:       []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
	}
}

// nameAttribute is the name of a namespaced resource; changing it replaces
// the object.
func nameAttribute(description string) schema.StringAttribute {
	return schema.StringAttribute{
		MarkdownDescription: description,
		Required:            true,
		Validators:          []validator.String{nameValidator{}},
		PlanModifiers:       []planmodifier.String{stringplanmodifier.RequiresReplace()},
	}
}

// namespaceAttribute is the namespace of a namespaced resource, by default
// api.DefaultNamespace; changing it replaces the object.
func namespaceAttribute(description string) schema.StringAttribute {
	return schema.StringAttribute{
		MarkdownDescription: description,
		Optional:            true,
		Computed:            true,
		Default:             stringdefault.StaticString(api.DefaultNamespace),
		Validators:          []validator.String{nameValidator{}},
		PlanModifiers:       []planmodifier.String{stringplanmodifier.RequiresReplace()},
	}
}
