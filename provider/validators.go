package provider

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/terraform-plugin-framework/schema/validator"

	"github.com/flotilla-io/flotilla/api"
)

// The validators below call or mirror api/validate.go so that plan-time
// errors read like the agent's own.

var (
	_ validator.String = nameValidator{}
	_ validator.String = imageValidator{}
	_ validator.String = addressValidator{}
	_ validator.String = envNameValidator{}
	_ validator.Int64  = memoryLimitValidator{}
)

// nameValidator checks a namespace, deployment or container name with
// api.ValidateName: a lower-case DNS label of at most api.MaxNameLen characters.
type nameValidator struct{}

func (nameValidator) Description(context.Context) string {
	return fmt.Sprintf("must be a lower-case DNS label of at most %d characters", api.MaxNameLen)
}

func (v nameValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (nameValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if err := api.ValidateName(req.ConfigValue.ValueString()); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid name", fmt.Sprintf("%s: %s", req.Path, err))
	}
}

// imageValidator checks a container image reference as the agent does:
// not empty and without white space.
type imageValidator struct{}

func (imageValidator) Description(context.Context) string {
	return "must be a non-empty image reference without white space"
}

func (v imageValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (imageValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	img := req.ConfigValue.ValueString()
	switch {
	case strings.TrimSpace(img) == "":
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid image", fmt.Sprintf("%s: must not be empty", req.Path))
	case strings.ContainsAny(img, " \t\n"):
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid image", fmt.Sprintf("%s: %q must not contain white space", req.Path, img))
	}
}

// envNameValidator checks an environment variable name (a key of env).
type envNameValidator struct{}

func (envNameValidator) Description(context.Context) string {
	return "environment variable names must be non-empty and contain no '=' or NUL"
}

func (v envNameValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (envNameValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if k := req.ConfigValue.ValueString(); k == "" || strings.ContainsAny(k, "=\x00") {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid environment variable name",
			fmt.Sprintf("%s: variable name %q is invalid", req.Path, k))
	}
}

// addressValidator checks the provider's address the way api.NewClient does.
type addressValidator struct{}

func (addressValidator) Description(context.Context) string {
	return "must be an http or https URL such as " + api.DefaultAddr
}

func (v addressValidator) MarkdownDescription(ctx context.Context) string { return v.Description(ctx) }

func (addressValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if req.ConfigValue.ValueString() == "" {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid flotilla agent address",
			"address must not be empty; omit it to use "+api.EnvAddr+" or "+api.DefaultAddr)
		return
	}
	if _, err := api.NewClient(&api.Config{Address: req.ConfigValue.ValueString()}); err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid flotilla agent address", err.Error())
	}
}

// minMemoryLimitMiB is the smallest memory limit a container starts with.
const minMemoryLimitMiB = 4

// memoryLimitValidator accepts 0 (no limit, as in the API) or at least
// minMemoryLimitMiB.
type memoryLimitValidator struct{}

func (memoryLimitValidator) Description(context.Context) string {
	return fmt.Sprintf("must be 0 (no limit) or at least %d MiB", minMemoryLimitMiB)
}

func (v memoryLimitValidator) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}

func (memoryLimitValidator) ValidateInt64(_ context.Context, req validator.Int64Request, resp *validator.Int64Response) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	if v := req.ConfigValue.ValueInt64(); v > 0 && v < minMemoryLimitMiB {
		resp.Diagnostics.AddAttributeError(req.Path, "Memory limit too small",
			fmt.Sprintf("%s: %d MiB is too small to start a container; use at least %d", req.Path, v, minMemoryLimitMiB))
	}
}
