// Command labboot boots an acceptance-lab node from a flotilla_cluster's
// cloud-init user-data the way cloud-init boots a VM from it: it writes the
// files of write_files, with paths under /etc/flotilla and
// /usr/local/lib/flotilla moved into the node's own directory, and starts
// the runcmd command (bootstrap-node.sh) inside the node's network namespace
// in the background, in a session of its own, output to the node's log.
//
// TestAccOneApply runs it from terraform_data resources' local-exec
// provisioners: the stand-in VMs of a one-apply configuration.
//
//	labboot -netns NAME -dir DIR [-log FILE] [-pidfile FILE] [-timeout D]
//
// The user-data comes in $FLOTILLA_USER_DATA, never on the command line (it
// holds secrets); labboot removes it from the environment the node gets.
// The rest of the environment passes to the script (FLOTILLA_NODE_NAME,
// FLOTILLA_AGENT_BIN, FLOTILLA_EXTRA_ARGS, ...), with FLOTILLA_CONFIG_DIR
// set to where /etc/flotilla went. The script's own settings (role, servers,
// agent URL and checksum) come from the env file the user-data writes.
//
// labboot returns once the script has exec'd $FLOTILLA_AGENT_BIN, so a boot
// that fails (a checksum mismatch, a missing file) fails the provisioner at
// once with the log's last lines instead of leaving terraform waiting for
// nodes that never come. The node's process group id is written to -pidfile
// for the test to stop it.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v3"
)

// userDataEnv is the variable the user-data comes in.
const userDataEnv = "FLOTILLA_USER_DATA"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "labboot:", err)
		os.Exit(1)
	}
}

func run() error {
	netns := flag.String("netns", "", "network namespace of the node, under /run/netns (required)")
	dir := flag.String("dir", "", "the node's directory: /etc/flotilla becomes DIR/etc, /usr/local/lib/flotilla DIR/lib (required)")
	logPath := flag.String("log", "", "the node's log (default DIR/node.log)")
	pidFile := flag.String("pidfile", "", "file to write the node's process group id to (default DIR/boot.pid)")
	timeout := flag.Duration("timeout", 2*time.Minute, "how long the script may take to exec the agent")
	flag.Parse()
	if *netns == "" || *dir == "" || flag.NArg() > 0 {
		flag.Usage()
		return errors.New("-netns and -dir are required, and nothing else")
	}
	if *logPath == "" {
		*logPath = filepath.Join(*dir, "node.log")
	}
	if *pidFile == "" {
		*pidFile = filepath.Join(*dir, "boot.pid")
	}
	agentBin := os.Getenv("FLOTILLA_AGENT_BIN")
	if agentBin == "" {
		return errors.New("FLOTILLA_AGENT_BIN is not set; labboot returns once the script runs it")
	}
	ud, err := parse(os.Getenv(userDataEnv))
	if err != nil {
		return err
	}
	m := newMapper(*dir)
	if err := ud.writeFiles(m); err != nil {
		return err
	}
	argv, err := ud.command(m)
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(*logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "labboot: wrote %d files of the user-data under %s; running %s in %s\n",
		len(ud.WriteFiles), *dir, strings.Join(argv, " "), *netns)

	cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + *netns, "--"}, argv...)...)
	cmd.Env = append(environ(), "FLOTILLA_CONFIG_DIR="+m.configDir())
	cmd.Stdout, cmd.Stderr = logf, logf
	// A session of its own: the node outlives labboot and the provisioner,
	// and the test stops its whole process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s in %s: %w", argv[0], *netns, err)
	}
	pid := cmd.Process.Pid
	if err := os.WriteFile(*pidFile, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	if err := waitExec(pid, agentBin, *timeout, exited); err != nil {
		return fmt.Errorf("%s: %w; last lines of %s:\n%s", *netns, err, *logPath, tail(*logPath, 15))
	}
	return nil
}

// waitExec waits until process pid runs agentBin (the script exec'd it).
// It fails if the process exits first or the timeout passes.
func waitExec(pid int, agentBin string, timeout time.Duration, exited <-chan error) error {
	want, err := filepath.EvalSymlinks(agentBin)
	if err != nil {
		want = agentBin // not there yet: the script downloads it
	}
	deadline := time.After(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && (exe == want || exe == agentBin) {
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("bootstrap-node.sh exited before it started the agent (%v)", err)
		case <-deadline:
			return fmt.Errorf("bootstrap-node.sh did not start the agent within %s", timeout)
		case <-tick.C:
		}
	}
}

// environ is labboot's environment without the user-data.
func environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, userDataEnv+"=") {
			env = append(env, kv)
		}
	}
	return env
}

// userData is the part of #cloud-config that flotilla_cluster renders. Any
// other key fails the parse: the lab must not skip what a VM would do.
type userData struct {
	WriteFiles []writeFile `yaml:"write_files"`
	RunCmd     [][]string  `yaml:"runcmd"`
}

type writeFile struct {
	Path        string `yaml:"path"`
	Owner       string `yaml:"owner"`
	Permissions string `yaml:"permissions"`
	Content     string `yaml:"content"`
}

// parse reads user-data with a YAML parser, strictly.
func parse(s string) (*userData, error) {
	if !strings.HasPrefix(s, "#cloud-config\n") {
		return nil, fmt.Errorf("$%s does not start with #cloud-config (%d bytes)", userDataEnv, len(s))
	}
	dec := yaml.NewDecoder(strings.NewReader(s))
	dec.KnownFields(true)
	var ud userData
	if err := dec.Decode(&ud); err != nil {
		return nil, fmt.Errorf("parse the user-data: %w", err)
	}
	if len(ud.WriteFiles) == 0 {
		return nil, errors.New("the user-data writes no files")
	}
	return &ud, nil
}

// mapper moves a VM's paths into the node's directory.
type mapper struct{ prefixes [][2]string }

func newMapper(dir string) *mapper {
	return &mapper{prefixes: [][2]string{
		{"/etc/flotilla", filepath.Join(dir, "etc")},
		{"/usr/local/lib/flotilla", filepath.Join(dir, "lib")},
	}}
}

func (m *mapper) configDir() string { return m.prefixes[0][1] }

// path returns where a VM path goes; only the two directories are mapped.
func (m *mapper) path(p string) (string, error) {
	clean := filepath.Clean(p)
	for _, pr := range m.prefixes {
		if rest, ok := strings.CutPrefix(clean, pr[0]+"/"); ok {
			return filepath.Join(pr[1], rest), nil
		}
	}
	return "", fmt.Errorf("%s is outside /etc/flotilla and /usr/local/lib/flotilla; the lab does not map it", p)
}

func (ud *userData) writeFiles(m *mapper) error {
	for _, f := range ud.WriteFiles {
		dst, err := m.path(f.Path)
		if err != nil {
			return err
		}
		if f.Owner != "" && f.Owner != "root:root" {
			return fmt.Errorf("%s: owner %q; the lab writes files as root only", f.Path, f.Owner)
		}
		perm, err := strconv.ParseUint(f.Permissions, 8, 32)
		if err != nil || perm > 0o777 {
			return fmt.Errorf("%s: permissions %q are not an octal mode", f.Path, f.Permissions)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, []byte(f.Content), os.FileMode(perm)); err != nil {
			return err
		}
		// WriteFile's mode is subject to the umask and ignored for an
		// existing file; cloud-init sets it exactly.
		if err := os.Chmod(dst, os.FileMode(perm)); err != nil {
			return err
		}
	}
	return nil
}

// command returns runcmd's one command with its program mapped.
func (ud *userData) command(m *mapper) ([]string, error) {
	if len(ud.RunCmd) != 1 || len(ud.RunCmd[0]) == 0 {
		return nil, fmt.Errorf("runcmd has %d commands; the lab runs exactly one (bootstrap-node.sh)", len(ud.RunCmd))
	}
	argv := append([]string(nil), ud.RunCmd[0]...)
	prog, err := m.path(argv[0])
	if err != nil {
		return nil, fmt.Errorf("runcmd: %w", err)
	}
	argv[0] = prog
	return argv, nil
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
