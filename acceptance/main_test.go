package acceptance

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// suite is what TestMain prepares once for every test.
type suite struct {
	agentBin string
	// cliBin is the flotilla command line.
	cliBin string
	// registry is host:port of the loopback registry serving demo:v1 and demo:v2.
	registry string
	// imageDir holds demo-v1.tar (flotilla.local/demo:v1) for air-gapped nodes.
	imageDir string
}

var env suite

func TestMain(m *testing.M) { os.Exit(runMain(m)) }

func runMain(m *testing.M) int {
	if os.Getenv("TF_ACC") == "" {
		fmt.Println("acceptance: TF_ACC is not set; `make test` sets it and runs these tests")
		return m.Run()
	}
	if os.Geteuid() != 0 {
		fmt.Println("acceptance: these tests run real agents and must run as root")
		return 1
	}
	os.Setenv("CHECKPOINT_DISABLE", "1")
	if os.Getenv("TF_ACC_TERRAFORM_PATH") == "" {
		if p, err := exec.LookPath("terraform"); err == nil {
			os.Setenv("TF_ACC_TERRAFORM_PATH", p)
		}
	}
	dir, err := os.MkdirTemp("", "flotilla-acc-")
	if err != nil {
		fmt.Println("acceptance:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	stop, err := prepare(dir)
	defer stop()
	if err != nil {
		fmt.Println("acceptance: setup failed:", err)
		return 1
	}
	return m.Run()
}

// prepare builds the agent and the demo images and starts the registry.
func prepare(dir string) (stop func(), err error) {
	stop = func() {}
	env.agentBin = filepath.Join(dir, "flotilla-agent")
	env.cliBin = filepath.Join(dir, "flotilla")
	mkimage := filepath.Join(dir, "mkimage")
	// The light log driver beside the agent, as `make build` installs it
	// (the cloud-init test's agent, downloaded alone, is its own).
	logDriver := filepath.Join(dir, "flotilla-log-driver")
	for bin, pkg := range map[string]string{env.agentBin: "../agent/cmd/flotilla-agent", logDriver: "../agent/cmd/flotilla-log-driver", env.cliBin: "../agent/cmd/flotilla", mkimage: "../tools/mkimage"} {
		if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
			return stop, fmt.Errorf("build %s: %v\n%s", pkg, err, out)
		}
	}
	port, err := freePort()
	if err != nil {
		return stop, err
	}
	env.registry = fmt.Sprintf("127.0.0.1:%d", port)
	cfgPath := filepath.Join(dir, "registry.yml")
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(dir, "registry"), env.registry)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return stop, err
	}
	reg := exec.Command("docker-registry", "serve", cfgPath)
	logf, _ := os.Create(filepath.Join(dir, "registry.log"))
	reg.Stdout, reg.Stderr = logf, logf
	if err := reg.Start(); err != nil {
		return stop, fmt.Errorf("start docker-registry (apt-get install docker-registry): %w", err)
	}
	stop = func() { _ = reg.Process.Kill(); _ = reg.Wait() }
	if err := waitHTTP("http://"+env.registry+"/v2/", 20*time.Second); err != nil {
		return stop, fmt.Errorf("registry did not answer: %w", err)
	}
	env.imageDir = filepath.Join(dir, "images")
	if err := os.MkdirAll(env.imageDir, 0o755); err != nil {
		return stop, err
	}
	if out, err := exec.Command(mkimage, "-version", "v1", "-tag", "flotilla.local/demo:v1", "-o", filepath.Join(env.imageDir, "demo-v1.tar")).CombinedOutput(); err != nil {
		return stop, fmt.Errorf("write demo image archive: %v\n%s", err, out)
	}
	for _, v := range []string{"v1", "v2"} {
		out, err := exec.Command(mkimage, "-version", v, "-push", env.registry+"/demo:"+v).CombinedOutput()
		if err != nil {
			return stop, fmt.Errorf("push demo:%s: %v\n%s", v, err, out)
		}
	}
	return stop, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func waitHTTP(url string, timeout time.Duration) error {
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		if last = cond(ctx); last == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %s: %v", what, timeout, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// image is the registry reference of a demo image version.
func image(version string) string { return env.registry + "/demo:" + version }

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
