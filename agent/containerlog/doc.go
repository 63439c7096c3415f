// Package containerlog owns container logs on disk: the format of a record,
// the layout of a container's log directory, the writer that rotates its
// files, the log driver process the containerd shim runs for every task
// (containerd's binary:// logging), and the reader that serves tail, since,
// previous and follow from those files.
//
// Each container has a directory of its own. Every run of the container (a
// task: its first start, then each restart) writes files <run>.<seq>.log,
// each at most MaxSize bytes; a run keeps its last MaxFiles files, and the
// directory keeps the current run and the one before it (what `previous`
// reads), as the kubelet keeps a container's last instance. A container's
// output therefore takes at most 2 × MaxFiles × MaxSize bytes of disk.
//
// Records are CRI's log format, one a line:
//
//	2024-05-01T10:00:00.000000000Z stdout F a whole line
//	2024-05-01T10:00:00.000000000Z stderr P the first 16 KiB of a longer line…
//
// so that `since` and `timestamps` have a time for every line and stdout and
// stderr stay apart.
//
// The package writes and reads files only: it knows nothing of containerd,
// pods or the network. The runtime (agent/runtime/containerd) starts the
// driver through the shim; the node package maps pods to directories.
package containerlog
