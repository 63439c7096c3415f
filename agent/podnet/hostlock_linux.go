package podnet

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// portmapLockPath is the host-wide lock on the portmap plugin's shared nat
// chains (CNI-HOSTPORT-DNAT, -SETMARK, -MASQ). Those chains belong to every
// network on the host, not to one agent: two agents on one machine (tests
// run several, an operator may too) racing "check, then create" in the
// plugin duplicate the jumps to them, and one agent's cleanup deleting them
// "when unused" races another's ADD filling them. An flock lasts only as long
// as the process holding it, so a crash never leaves the host locked.
const portmapLockPath = "/run/lock/flotilla-portmap.lock"

// lockPortmap takes the host-wide portmap lock, waiting for it; the
// returned function releases it. Each call opens the file anew, so the lock
// also excludes other goroutines of this process (flock is per open file).
func lockPortmap() (func(), error) {
	if err := os.MkdirAll(filepath.Dir(portmapLockPath), 0o755); err != nil {
		return nil, fmt.Errorf("host port lock: %w", err)
	}
	f, err := os.OpenFile(portmapLockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("host port lock: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("host port lock %s: %w", portmapLockPath, err)
	}
	// Closing the file releases the lock.
	return func() { f.Close() }, nil
}
