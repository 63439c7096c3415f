package podnet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// portmapLockPath is the host-wide lock on the portmap plugin's shared nat
// chains (CNI-HOSTPORT-DNAT, -SETMARK, -MASQ). Those chains belong to every
// network on the host, not to one agent: two agents on one machine (tests
// run several, an operator may too) racing "check, then create" in the
// plugin duplicate the jumps to them, and one agent's cleanup deleting them
// "when unused" races another's ADD filling them. It lives under /run,
// where only root may make the directory: in /run/lock (world-writable) any
// user could make the file first, hold the lock and stall every pod with a
// host port. An flock lasts only as long as its process, so a crash never
// leaves the host locked.
const portmapLockPath = "/run/flotilla/portmap.lock"

// lockPortmap takes the host-wide portmap lock, waiting for it until ctx
// ends; the returned function releases it. Each call opens the file anew,
// so the lock also excludes other goroutines of this process (flock is per
// open file). Calls must not nest.
func lockPortmap(ctx context.Context) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(portmapLockPath), 0o755); err != nil {
		return nil, fmt.Errorf("host port lock: %w", err)
	}
	f, err := os.OpenFile(portmapLockPath, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("host port lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			// Closing the file releases the lock.
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("host port lock %s: %w", portmapLockPath, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("host port lock %s: held by another agent: %w", portmapLockPath, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}
