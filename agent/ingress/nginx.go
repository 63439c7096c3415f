package ingress

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Nginx runs one nginx master process with its configuration in Dir: it
// starts it, reloads it gracefully (SIGHUP: the listeners stay open, the
// old workers finish their requests) and stops it. It writes the
// certificate files, 0600 in Dir/tls (0700), and removes those the
// configuration no longer names. Its methods are safe for concurrent use.
type Nginx struct {
	bin, dir string
	log      *slog.Logger

	mu      sync.Mutex
	pid     int
	exited  chan struct{} // closed when a child we started exits; nil for an adopted one
	applied string        // the configuration text in force
}

// NewNginx returns a manager of the nginx binary bin (a path, or a name
// looked up in PATH) running in dir, an absolute directory it owns.
func NewNginx(bin, dir string, log *slog.Logger) (*Nginx, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("ingress: directory %q must be absolute", dir)
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("ingress: nginx binary %q not found (%w); install Debian's nginx-light (make deps) or set the ingress nginx path", bin, err)
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Nginx{bin: path, dir: dir, log: log}, nil
}

func (n *Nginx) confPath() string { return filepath.Join(n.dir, "nginx.conf") }
func (n *Nginx) tlsDir() string   { return filepath.Join(n.dir, "tls") }

// Prepare makes the directories and writes a file into Dir/tls (the
// fallback certificate) before the first Apply.
func (n *Nginx) Prepare(name string, pem []byte) error {
	if err := os.MkdirAll(filepath.Join(n.dir, "tmp"), 0o755); err != nil {
		return fmt.Errorf("ingress: make %s: %w", n.dir, err)
	}
	if err := os.MkdirAll(n.tlsDir(), 0o700); err != nil {
		return fmt.Errorf("ingress: make %s: %w", n.tlsDir(), err)
	}
	// MkdirAll keeps the mode of a directory that exists.
	if err := os.Chmod(n.tlsDir(), 0o700); err != nil {
		return fmt.Errorf("ingress: %w", err)
	}
	return writeSecret(filepath.Join(n.tlsDir(), name), pem)
}

// writeSecret writes a file 0600 through a rename, so nginx never reads
// half of it.
func writeSecret(path string, data []byte) error {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		return nil
	}
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("ingress: write certificate file %s: %w", filepath.Base(path), err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("ingress: write certificate file %s: %w", filepath.Base(path), err)
	}
	return nil
}

// Apply puts a configuration in force: it writes the certificates, has
// nginx test the configuration (a bad one leaves the running one alone),
// then starts nginx or reloads it, and removes certificate files no longer
// named (keep lists other files of Dir/tls to keep, the fallback).
func (n *Nginx) Apply(ctx context.Context, r Rendered, keep ...string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for name, pem := range r.Certs {
		if err := writeSecret(filepath.Join(n.tlsDir(), name), pem); err != nil {
			return err
		}
	}
	next := n.confPath() + ".next"
	if err := os.WriteFile(next, []byte(r.Text), 0o644); err != nil {
		return fmt.Errorf("ingress: write %s: %w", next, err)
	}
	if out, err := exec.CommandContext(ctx, n.bin, "-t", "-q", "-p", n.dir, "-c", next).CombinedOutput(); err != nil {
		return fmt.Errorf("ingress: nginx refused the configuration (kept the running one; %s is the refused file): %s: %w", next, strings.TrimSpace(string(out)), err)
	}
	if err := os.Rename(next, n.confPath()); err != nil {
		return fmt.Errorf("ingress: %w", err)
	}
	if n.runningLocked() {
		if r.Text != n.applied {
			if err := n.reloadLocked(ctx); err != nil {
				return err
			}
		}
	} else if err := n.startLocked(); err != nil {
		return err
	}
	n.applied = r.Text
	n.removeStale(r, keep)
	return nil
}

// reloadLocked sends SIGHUP and waits until the master runs workers of
// the new configuration and has told the old ones to finish (they then
// accept no new connection and close idle keep-alive ones), so a caller
// knows when a change is in force. A master that refused the
// configuration keeps its old workers: that is an error after 10 s.
func (n *Nginx) reloadLocked(ctx context.Context) error {
	old := map[int]bool{}
	for _, w := range workers(n.pid) {
		old[w.pid] = true
	}
	if err := syscall.Kill(n.pid, syscall.SIGHUP); err != nil {
		return fmt.Errorf("ingress: reload nginx (pid %d): %w", n.pid, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		fresh, stale := 0, 0
		for _, w := range workers(n.pid) {
			switch {
			case w.shuttingDown:
			case old[w.pid]:
				stale++
			default:
				fresh++
			}
		}
		if fresh > 0 && stale == 0 {
			return nil
		}
		if !n.runningLocked() {
			return fmt.Errorf("ingress: nginx (pid %d) exited while reloading; the agent starts it again", n.pid)
		}
		if !sleep(ctx, 5*time.Millisecond) {
			return fmt.Errorf("ingress: nginx (pid %d) did not reload within 10s; its error log (in the agent log) says why", n.pid)
		}
	}
}

// procStat is one process's /proc/<pid>/stat, its fields after the
// command name: [0] state, [1] ppid, [2] pgrp, ... [11] utime, [12] stime.
type procStat struct {
	pid    int
	fields []string
}

// processes lists every process's stat; ok is false when /proc is not
// readable. The command name may hold spaces, so the fields start after
// its ")".
func processes() (out []procStat, ok bool) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, false
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		out = append(out, procStat{pid: pid, fields: strings.Fields(string(stat[i+1:]))})
	}
	return out, true
}

// groupAlive reports whether a process group has a live member (zombies
// left for an init that does not reap them do not count).
func groupAlive(pgid int) bool {
	ps, ok := processes()
	if !ok {
		return syscall.Kill(-pgid, 0) == nil
	}
	for _, p := range ps {
		if f := p.fields; len(f) > 2 && f[2] == strconv.Itoa(pgid) && f[0] != "Z" {
			return true
		}
	}
	return false
}

type worker struct {
	pid          int
	shuttingDown bool
}

// workers lists the worker processes of an nginx master from /proc.
func workers(master int) []worker {
	ps, _ := processes()
	var out []worker
	for _, p := range ps {
		if len(p.fields) < 2 || p.fields[1] != strconv.Itoa(master) {
			continue
		}
		title, _ := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/cmdline")
		if !bytes.Contains(title, []byte("worker process")) {
			continue // the cache manager, or a helper
		}
		out = append(out, worker{pid: p.pid, shuttingDown: bytes.Contains(title, []byte("shutting down"))})
	}
	return out
}

// removeStale removes the certificate files the configuration no longer
// names: an ingress's key leaves the disk with the ingress. The master has
// read the new configuration's files already or will; the old workers hold
// their certificates in memory.
func (n *Nginx) removeStale(r Rendered, keep []string) {
	ents, err := os.ReadDir(n.tlsDir())
	if err != nil {
		return
	}
	for _, e := range ents {
		if _, ok := r.Certs[e.Name()]; ok || containsStr(keep, e.Name()) {
			continue
		}
		if err := os.Remove(filepath.Join(n.tlsDir(), e.Name())); err != nil {
			n.log.Warn("cannot remove an unused certificate file", "file", e.Name(), "err", err)
		}
	}
}

func containsStr(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// Running reports whether the nginx master is alive.
func (n *Nginx) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.runningLocked()
}

// PID returns the master's process id, 0 when none runs.
func (n *Nginx) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.runningLocked() {
		return 0
	}
	return n.pid
}

func (n *Nginx) runningLocked() bool {
	if n.pid == 0 {
		return false
	}
	if n.exited != nil {
		select {
		case <-n.exited:
			return false
		default:
			return true
		}
	}
	return n.isOurs(n.pid)
}

// isOurs reports whether pid is an nginx master running our configuration.
func (n *Nginx) isOurs(pid int) bool {
	cmd, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	return bytes.Contains(cmd, []byte("nginx")) && bytes.Contains(cmd, []byte(n.confPath()))
}

// Adopt takes over an nginx a previous run of the agent left running with
// the same directory, so an agent restart closes no listener. It reports
// whether there was one.
func (n *Nginx) Adopt() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	b, err := os.ReadFile(filepath.Join(n.dir, "nginx.pid"))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 || !n.isOurs(pid) {
		return false
	}
	n.pid, n.exited = pid, nil
	n.log.Info("adopted the running nginx", "pid", pid)
	return true
}

func (n *Nginx) startLocked() error {
	if n.pid != 0 {
		// The master died: its workers would keep serving the old
		// configuration and hold the ports.
		syscall.Kill(-n.pid, syscall.SIGKILL)
	}
	cmd := exec.Command(n.bin, "-p", n.dir, "-c", n.confPath())
	// Its own process group: a terminal's signals to the agent do not
	// reach it, and the group ends workers a killed master left.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A pipe of our own, not StderrPipe: the workers hold it open after a
	// killed master, and the master's exit must be seen all the same.
	pr, pw, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("ingress: %w", err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	err = cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		return fmt.Errorf("ingress: start nginx: %w", err)
	}
	exited := make(chan struct{})
	n.pid, n.exited = cmd.Process.Pid, exited
	n.log.Info("started nginx", "pid", n.pid)
	go n.copyLog(pr) // ends when the last nginx process closes the pipe
	go func() {      // ends when the master exits
		err := cmd.Wait()
		close(exited)
		n.log.Info("nginx exited", "pid", cmd.Process.Pid, "status", fmt.Sprint(err))
	}()
	// The master opens the listeners before it forks the workers: once one
	// runs, nginx serves.
	deadline := time.Now().Add(10 * time.Second)
	for len(workers(n.pid)) == 0 {
		select {
		case <-exited:
			return fmt.Errorf("ingress: nginx exited at start (a port taken? its error log is in the agent log)")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ingress: nginx (pid %d) started no worker within 10s", n.pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// copyLog passes nginx's error log (its stderr, and its workers') to slog.
func (n *Nginx) copyLog(r io.ReadCloser) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		line := sc.Text()
		level := slog.LevelInfo
		switch {
		case strings.Contains(line, "[emerg]"), strings.Contains(line, "[alert]"), strings.Contains(line, "[crit]"), strings.Contains(line, "[error]"):
			level = slog.LevelWarn
		case strings.Contains(line, "[notice]"):
			level = slog.LevelDebug
		}
		n.log.Log(context.Background(), level, "nginx", "line", line)
	}
	io.Copy(io.Discard, r)
}

// Stop ends nginx gracefully (SIGQUIT: in-flight requests finish), then
// by force when ctx ends first. It waits until the process group is gone.
func (n *Nginx) Stop(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.pid == 0 {
		return nil
	}
	pid := n.pid
	if n.runningLocked() {
		syscall.Kill(pid, syscall.SIGQUIT)
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for n.runningLocked() || groupAlive(pid) {
		select {
		case <-ctx.Done():
			syscall.Kill(-pid, syscall.SIGKILL)
			syscall.Kill(pid, syscall.SIGKILL)
			if n.exited != nil {
				<-n.exited
			}
			n.pid, n.applied = 0, ""
			return fmt.Errorf("ingress: nginx (pid %d) did not stop in time; killed it: %w", pid, ctx.Err())
		case <-t.C:
		}
	}
	n.pid, n.applied = 0, ""
	return nil
}

// Cleanup removes Dir and everything in it (keys included). Stop first.
func (n *Nginx) Cleanup() error {
	if n.Running() {
		return errors.New("ingress: nginx still runs; stop it before removing its files")
	}
	if err := os.RemoveAll(n.dir); err != nil {
		return fmt.Errorf("ingress: remove %s: %w", n.dir, err)
	}
	return nil
}

// Remove stops an nginx a Proxy left running in dir (KeepRunning, or an
// agent killed) and removes dir, keys included: `flotilla-agent cleanup`.
// Nothing there is not an error.
func Remove(ctx context.Context, dir string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	n := &Nginx{dir: dir, log: log}
	if n.Adopt() {
		if err := n.Stop(ctx); err != nil {
			return err
		}
	}
	return n.Cleanup()
}
