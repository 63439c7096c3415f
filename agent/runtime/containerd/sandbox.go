package containerd

import (
	"context"
	"fmt"
	"strconv"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/contrib/apparmor"
	"github.com/containerd/containerd/contrib/seccomp"
	"github.com/containerd/containerd/oci"

	"github.com/flotilla-io/flotilla/agent/runtime"
	"github.com/flotilla-io/flotilla/api"
)

// AppArmorProfile is the AppArmor profile containers run under where the
// host has AppArmor: containerd's default template (Docker's), loaded
// under this name by the first Create that needs it.
const AppArmorProfile = "flotilla-default"

// sandboxOpts returns the spec options that confine a container. They go
// after the image's config, whose USER the user options replace.
//
// containerd's default spec already has no-new-privileges, Docker's
// default capabilities, its masked and read-only /proc paths, a
// deny-all device cgroup and new namespaces; the options set the first
// two again so the sandbox does not depend on that default, and leave the
// rest (TestSandboxSpec checks them). Nothing here can ask for a
// privileged container, a host mount or a host namespace.
func sandboxOpts(spec runtime.ContainerSpec, appArmor bool) ([]oci.SpecOpts, error) {
	// The values come from the replicated state: check them as the API did.
	sec := api.Security{RunAsUser: spec.RunAsUser, RunAsGroup: spec.RunAsGroup,
		Capabilities: &api.Capabilities{Add: spec.CapAdd, Drop: spec.CapDrop}}
	if err := sec.Validate(); err != nil {
		return nil, fmt.Errorf("security: %w", err)
	}
	if spec.PidsLimit < 0 || spec.PidsLimit > api.MaxPidsLimit {
		return nil, fmt.Errorf("pids limit %d is out of range 0..%d", spec.PidsLimit, api.MaxPidsLimit)
	}
	var caps []string
	for _, c := range api.EffectiveCapabilities(sec.Capabilities) {
		caps = append(caps, "CAP_"+c)
	}
	opts := []oci.SpecOpts{
		oci.WithNoNewPrivileges,
		oci.WithCapabilities(caps),
		// After the capabilities: the profile allows the system calls
		// they grant (mount with SYS_ADMIN, say) and no others.
		seccomp.WithDefaultProfile(),
	}
	switch {
	case spec.RunAsUser != nil && spec.RunAsGroup != nil:
		opts = append(opts, oci.WithUIDGID(uint32(*spec.RunAsUser), uint32(*spec.RunAsGroup)))
	case spec.RunAsUser != nil:
		// The primary group from the image's /etc/passwd, or 0, as Docker's --user UID.
		opts = append(opts, oci.WithUserID(uint32(*spec.RunAsUser)))
	case spec.RunAsGroup != nil:
		opts = append(opts, withGID(uint32(*spec.RunAsGroup)))
	}
	if spec.RunAsUser != nil || spec.RunAsGroup != nil {
		// The image's user's supplementary groups were read for the
		// image's user; read them again for the one the container runs
		// as, or it would keep the old primary group among them.
		opts = append(opts, withSupplementaryGroups)
	}
	if spec.ReadOnlyRootFS {
		opts = append(opts, oci.WithRootFSReadonly())
	}
	if spec.PidsLimit > 0 {
		opts = append(opts, oci.WithPidsLimit(spec.PidsLimit))
	}
	if appArmor {
		opts = append(opts, apparmor.WithDefaultProfile(AppArmorProfile))
	}
	return opts, nil
}

// withGID replaces the primary group only, keeping the image's user.
func withGID(gid uint32) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Process.User.GID = gid
		return nil
	}
}

// withSupplementaryGroups sets the supplementary groups of the spec's user
// from the image's /etc/group, plus its primary group (as containerd does).
func withSupplementaryGroups(ctx context.Context, client oci.Client, c *containers.Container, s *oci.Spec) error {
	return oci.WithAdditionalGIDs(strconv.FormatUint(uint64(s.Process.User.UID), 10))(ctx, client, c, s)
}
