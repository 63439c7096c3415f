package diskpressure

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flotilla-io/flotilla/api"
)

// Usage is a file system's size and free space, in bytes.
type Usage struct {
	Total, Avail uint64
}

// UsedPercent is the share of the file system in use, as df counts it.
func (u Usage) UsedPercent() float64 {
	if u.Total == 0 {
		return 0
	}
	return 100 * float64(u.Total-min(u.Avail, u.Total)) / float64(u.Total)
}

// Statfs reads the usage of the file system holding path.
type Statfs func(path string) (Usage, error)

// SysStatfs is Statfs by statfs(2). Avail is what an unprivileged user may
// still write, as df shows it.
func SysStatfs(path string) (Usage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return Usage{}, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := uint64(st.Bsize)
	return Usage{Total: st.Blocks * bs, Avail: st.Bavail * bs}, nil
}

// Step frees disk, e.g. by removing rotated container logs. It returns a
// short account for the log ("12 MiB of rotated logs").
type Step struct {
	Name string
	Run  func(ctx context.Context) (string, error)
}

// Config configures a Monitor.
type Config struct {
	// Dir is the data directory whose file system is watched.
	Dir string
	// High is the usage in percent at which the node is under pressure;
	// Low is the usage it must get under for the pressure to end.
	High, Low float64
	// Interval is how often usage is read.
	Interval time.Duration
	// Steps free disk, in order, when usage passes High and again at each
	// check while it is over Low; each stops the rest once usage is under
	// Low.
	Steps  []Step
	Statfs Statfs
	Now    func() time.Time
	Logger *slog.Logger
}

// DefaultConfig is pressure at 90 %, cleared under 85 %, checked every 10 s.
func DefaultConfig() Config {
	return Config{High: 90, Low: 85, Interval: 10 * time.Second, Statfs: SysStatfs, Now: time.Now}
}

// Validate checks the thresholds, naming the flags that set them.
func (c Config) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("disk pressure: Dir is empty"))
	}
	if c.High <= 0 || c.High > 100 {
		errs = append(errs, fmt.Errorf("--disk-pressure-threshold: %g%% is not in (0, 100]", c.High))
	}
	if c.Low <= 0 || c.Low > c.High {
		errs = append(errs, fmt.Errorf("--disk-pressure-low: %g%% must be in (0, --disk-pressure-threshold=%g%%]", c.Low, c.High))
	}
	if c.Interval <= 0 {
		errs = append(errs, errors.New("disk pressure: Interval must be positive"))
	}
	return errors.Join(errs...)
}

// Monitor tracks disk pressure. Check and Run update it; Condition may be
// called from any goroutine.
type Monitor struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	pressure bool
	since    time.Time
	message  string
}

// New checks cfg and returns a Monitor, not under pressure until a Check
// finds it.
func New(cfg Config) (*Monitor, error) {
	def := DefaultConfig()
	if cfg.Statfs == nil {
		cfg.Statfs = def.Statfs
	}
	if cfg.Now == nil {
		cfg.Now = def.Now
	}
	if cfg.Interval == 0 {
		cfg.Interval = def.Interval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Monitor{cfg: cfg, log: cfg.Logger.With("component", "diskpressure", "dir", cfg.Dir)}, nil
}

// Run checks every Interval until ctx ends; onChange, if set, is called
// after a check that started or ended the pressure.
func (m *Monitor) Run(ctx context.Context, onChange func()) {
	t := time.NewTicker(m.cfg.Interval)
	defer t.Stop()
	for {
		if m.Check(ctx) && onChange != nil {
			onChange()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Check reads usage once, frees disk if it is over High (or, under
// pressure, over Low), and says whether the pressure started or ended.
func (m *Monitor) Check(ctx context.Context) (changed bool) {
	u, err := m.cfg.Statfs(m.cfg.Dir)
	if err != nil {
		// Unknown usage changes nothing: neither new pressure nor relief.
		m.log.Warn("read disk usage", "err", err)
		return false
	}
	m.mu.Lock()
	pressure := m.pressure
	m.mu.Unlock()
	used := u.UsedPercent()
	if used >= m.cfg.High || (pressure && used >= m.cfg.Low) {
		used = m.free(ctx, used)
	}
	now := m.cfg.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case !m.pressure && used >= m.cfg.High:
		m.pressure, m.since = true, now
		m.log.Warn("disk pressure: taking no new pods", "used_percent", fmt.Sprintf("%.1f", used), "threshold", m.cfg.High)
		changed = true
	case m.pressure && used < m.cfg.Low:
		m.pressure, m.since = false, now
		m.log.Info("disk pressure over", "used_percent", fmt.Sprintf("%.1f", used), "low", m.cfg.Low)
		changed = true
	}
	if m.pressure {
		m.message = fmt.Sprintf("the file system of %s is %.0f%% full (threshold %g%%); the node takes no new pods until it is under %g%%",
			m.cfg.Dir, used, m.cfg.High, m.cfg.Low)
	}
	return changed
}

// free runs the steps until usage is under Low and returns the usage then.
func (m *Monitor) free(ctx context.Context, used float64) float64 {
	for _, s := range m.cfg.Steps {
		if used < m.cfg.Low || ctx.Err() != nil {
			break
		}
		what, err := s.Run(ctx)
		if err != nil {
			m.log.Warn("free disk", "step", s.Name, "err", err)
		} else if what != "" {
			m.log.Info("freed disk", "step", s.Name, "freed", what)
		}
		u, err := m.cfg.Statfs(m.cfg.Dir)
		if err != nil {
			m.log.Warn("read disk usage", "err", err)
			break
		}
		used = u.UsedPercent()
	}
	return used
}

// Condition returns the DiskPressure condition while the node is under
// pressure.
func (m *Monitor) Condition() (api.NodeCondition, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.pressure {
		return api.NodeCondition{}, false
	}
	return api.NodeCondition{Type: api.NodeConditionDiskPressure, Since: m.since, Message: m.message}, true
}
