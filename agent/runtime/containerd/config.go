package containerd

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/defaults"

	"github.com/flotilla-io/flotilla/agent/containerlog"
)

// Config says which containerd to use and how to run containers in it.
type Config struct {
	// Address is containerd's gRPC socket.
	Address string
	// Namespace is the containerd namespace holding this agent's images and
	// containers, e.g. "flotilla".
	Namespace string
	// InsecureRegistries are registries (host:port) served over plain HTTP.
	// localhost, 127.0.0.1 and ::1 are always plain HTTP.
	InsecureRegistries []string
	// Snapshotter unpacks images and holds container root file systems.
	Snapshotter string
	// CgroupParent is the cgroup every container is placed under, as
	// CgroupParent/<id>; "" leaves the choice to runc's default.
	CgroupParent string
	// RuncRoot is runc's state directory for our containers; "" means runc's
	// default, /run/containerd/runc/<namespace>, which every containerd on the
	// machine shares. Set it (e.g. under containerd's state dir) when several
	// agents share one machine, as lab nodes do, or equal container IDs collide.
	RuncRoot string
	// LogDriver is the executable the shim starts for every task of a
	// container with a LogDir, to write its output (containerd's binary://
	// logging): flotilla-agent itself, whose hidden command
	// containerlog.DriverCommand runs containerlog.DriverMain. Required
	// for containers with a LogDir.
	LogDriver string
	// LogMaxSize and LogMaxFiles bound each run of a container's log
	// (containerlog.WriterConfig); 0 takes containerlog's defaults, the
	// kubelet's 10 MiB × 5. Changes apply to runs started after them.
	LogMaxSize  int64
	LogMaxFiles int
	// Logger receives runtime events; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns a working Config: containerd's default socket
// (/run/containerd/containerd.sock; the agent points Address at its private
// containerd from containerdproc instead), namespace "flotilla", the
// overlayfs snapshotter and cgroup parent "/flotilla".
func DefaultConfig() Config {
	return Config{
		Address:      defaults.DefaultAddress,
		Namespace:    "flotilla",
		Snapshotter:  "overlayfs",
		CgroupParent: "/flotilla",
	}
}

// withDefaults fills optional fields and checks the required ones.
func (c Config) withDefaults() (Config, error) {
	var errs []error
	if c.Address == "" {
		errs = append(errs, errors.New("containerd runtime: Address (containerd socket) is empty"))
	}
	if c.Namespace == "" {
		errs = append(errs, errors.New("containerd runtime: Namespace is empty"))
	}
	if c.Snapshotter == "" {
		c.Snapshotter = "overlayfs"
	}
	if c.CgroupParent != "" {
		if !strings.HasPrefix(c.CgroupParent, "/") {
			errs = append(errs, fmt.Errorf("containerd runtime: CgroupParent %q must start with /", c.CgroupParent))
		}
		c.CgroupParent = path.Clean(c.CgroupParent)
	}
	if c.RuncRoot != "" && !filepath.IsAbs(c.RuncRoot) {
		errs = append(errs, fmt.Errorf("containerd runtime: RuncRoot %q must be an absolute path", c.RuncRoot))
	}
	if c.LogDriver != "" && !filepath.IsAbs(c.LogDriver) {
		errs = append(errs, fmt.Errorf("containerd runtime: LogDriver %q must be an absolute path (the shim runs it)", c.LogDriver))
	}
	if c.LogMaxSize == 0 {
		c.LogMaxSize = containerlog.DefaultMaxSize
	}
	if c.LogMaxFiles == 0 {
		c.LogMaxFiles = containerlog.DefaultMaxFiles
	}
	if err := (containerlog.WriterConfig{Dir: "/", MaxSize: c.LogMaxSize, MaxFiles: c.LogMaxFiles}).Validate(); err != nil {
		errs = append(errs, fmt.Errorf("containerd runtime: container logs: %w", err))
	}
	regs := make([]string, 0, len(c.InsecureRegistries))
	for _, r := range c.InsecureRegistries {
		r = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(r, "http://"), "https://"), "/")
		if r != "" {
			regs = append(regs, r)
		}
	}
	c.InsecureRegistries = regs
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c, errors.Join(errs...)
}
