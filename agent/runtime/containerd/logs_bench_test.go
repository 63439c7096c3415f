package containerd_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/cio"

	"github.com/flotilla-io/flotilla/agent/containerlog"
	"github.com/flotilla-io/flotilla/agent/runtime"
)

// BenchmarkContainerLogs compares the log driver (binary:// logging, what
// containers use) with containerd's file logging (cio.LogFile: the shim
// appends to one file, no rotation, no time or stream per line), on a
// container that writes 32 MiB of 101-byte lines as fast as it can. It
// reports the throughput, the CPU the shim and the driver spent per MiB,
// and the driver's memory. The driver is flotilla-agent itself, built
// here, as nodes run it (FLOTILLA_LOG_DRIVER names another binary).
//
//	go test -run '^$' -bench ContainerLogs -benchtime 5x ./agent/runtime/containerd/
func BenchmarkContainerLogs(b *testing.B) {
	e := setupBare(b)
	importBusybox(b, e)
	driver := agentBinary(b)
	const total = 32 << 20
	for _, mode := range []string{"file", "driver"} {
		b.Run(mode, func(b *testing.B) {
			var wall time.Duration
			var shimTicks, driverTicks, rss, pss int64
			for i := range b.N {
				ctx, cancel := context.WithTimeout(nsCtx(context.Background()), 2*time.Minute)
				id := fmt.Sprintf("%s-%d", mode, i)
				spec := runtime.ContainerSpec{ID: id, Image: busyboxTag, Command: []string{"sh", "-c",
					fmt.Sprintf(`yes %s | head -c %d`, strings.Repeat("x", 100), total)}}
				if err := e.rt.Create(ctx, spec); err != nil {
					b.Fatal(err)
				}
				c, err := e.rt.Client().LoadContainer(ctx, id)
				if err != nil {
					b.Fatal(err)
				}
				dir := filepath.Join(e.logDir, id)
				creator := cio.LogFile(dir + ".log")
				if mode == "driver" {
					creator = cio.BinaryIO(driver, containerlog.DriverArgs(containerlog.WriterConfig{
						Dir: dir, MaxSize: containerlog.DefaultMaxSize, MaxFiles: containerlog.DefaultMaxFiles}))
				}
				task, err := c.NewTask(ctx, creator)
				if err != nil {
					b.Fatal(err)
				}
				exitC, err := task.Wait(ctx)
				if err != nil {
					b.Fatal(err)
				}
				shim := parentOf(int(task.Pid()))
				start := time.Now()
				if err := task.Start(ctx); err != nil {
					b.Fatal(err)
				}
				<-exitC
				wall += time.Since(start)
				shimTicks += cpuTicks(shim)
				if mode == "driver" {
					d := logDriverOf(shim)
					if d == 0 {
						b.Fatal("no log driver under the shim")
					}
					driverTicks += cpuTicks(d)
					rss += statusKB(fmt.Sprintf("/proc/%d/status", d), "VmRSS:")
					pss += statusKB(fmt.Sprintf("/proc/%d/smaps_rollup", d), "Pss:")
				}
				if _, err := task.Delete(ctx); err != nil {
					b.Fatal(err)
				}
				if err := e.rt.Remove(ctx, id); err != nil {
					b.Fatal(err)
				}
				cancel()
				os.RemoveAll(dir)
				os.Remove(dir + ".log")
			}
			mib := float64(b.N) * total / (1 << 20)
			b.ReportMetric(mib/wall.Seconds(), "MiB/s")
			b.ReportMetric(float64(shimTicks)*10/mib, "shim-cpu-ms/MiB")
			if mode == "driver" {
				b.ReportMetric(float64(driverTicks)*10/mib, "driver-cpu-ms/MiB")
				b.ReportMetric(float64(rss)/1024/float64(b.N), "driver-RSS-MiB")
				b.ReportMetric(float64(pss)/1024/float64(b.N), "driver-PSS-MiB")
			}
		})
	}
}

// agentBinary builds flotilla-agent, the log driver nodes run, unless
// FLOTILLA_LOG_DRIVER names one.
func agentBinary(b *testing.B) string {
	if p := os.Getenv("FLOTILLA_LOG_DRIVER"); p != "" {
		return p
	}
	out := filepath.Join(b.TempDir(), "flotilla-agent")
	cmd := exec.Command("go", "build", "-o", out, "github.com/flotilla-io/flotilla/agent/cmd/flotilla-agent")
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build flotilla-agent: %v\n%s", err, msg)
	}
	return out
}

func parentOf(pid int) int {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	n, _ := strconv.Atoi(f[1])
	return n
}

// cpuTicks is the user and system time of pid, in clock ticks (10 ms).
func cpuTicks(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

// logDriverOf finds the log driver the shim started.
func logDriverOf(shim int) int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", shim))
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, s := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(s)
			cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if args := strings.Split(string(cmd), "\x00"); len(args) > 1 && args[1] == containerlog.DriverCommand {
				return pid
			}
		}
	}
	return 0
}

func statusKB(path, key string) int64 {
	b, _ := os.ReadFile(path)
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, key); ok {
			n, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			return n
		}
	}
	return 0
}
