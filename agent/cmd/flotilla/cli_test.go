package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/api"
)

// now is the test's clock: ages in the tables count from it.
var testNow = time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)

// fakeAPI serves the agent API's read routes from fixtures, with token
// s3cret, and records the query of each logs request.
type fakeAPI struct {
	nodes    []api.Node
	pods     []api.Pod
	deps     []api.Deployment
	svcs     []api.Service
	mu       sync.Mutex
	logQuery url.Values
	// schedules are the PUT /v1/nodes/{name}/schedule bodies, in order.
	schedules []string
}

func (f *fakeAPI) handler() http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	inNS := func(r *http.Request, ns string) bool { return r.PathValue("ns") == "" || r.PathValue("ns") == ns }
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		reply(w, api.AgentStatus{Node: "n1", Version: "0.1.0", Leader: "n1", Index: 42})
	})
	mux.HandleFunc("GET /v1/nodes", func(w http.ResponseWriter, r *http.Request) { reply(w, f.nodes) })
	mux.HandleFunc("PUT /v1/nodes/{name}/schedule", func(w http.ResponseWriter, r *http.Request) {
		var s api.NodeSchedule
		if err := json.NewDecoder(r.Body).Decode(&s); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.schedules = append(f.schedules, fmt.Sprintf("%s unschedulable=%v draining=%v", r.PathValue("name"), s.Unschedulable, s.Draining))
		// The drain is done at once: the node's pods stop.
		for i := range f.pods {
			if s.Draining && f.pods[i].Node == r.PathValue("name") {
				f.pods[i].Stop = true
			}
		}
		f.mu.Unlock()
		reply(w, api.Node{Name: r.PathValue("name"), Unschedulable: s.Unschedulable, Draining: s.Draining})
	})
	pods := func(w http.ResponseWriter, r *http.Request) {
		out := []api.Pod{}
		for _, p := range f.pods {
			if inNS(r, p.Namespace) && (r.URL.Query().Get("deployment") == "" || r.URL.Query().Get("deployment") == p.Deployment) {
				out = append(out, p)
			}
		}
		reply(w, out)
	}
	mux.HandleFunc("GET /v1/pods", pods)
	mux.HandleFunc("GET /v1/namespaces/{ns}/pods", pods)
	deps := func(w http.ResponseWriter, r *http.Request) {
		out := []api.Deployment{}
		for _, d := range f.deps {
			if inNS(r, d.Namespace) {
				out = append(out, d)
			}
		}
		reply(w, out)
	}
	mux.HandleFunc("GET /v1/deployments", deps)
	mux.HandleFunc("GET /v1/namespaces/{ns}/deployments", deps)
	svcs := func(w http.ResponseWriter, r *http.Request) {
		out := []api.Service{}
		for _, s := range f.svcs {
			if inNS(r, s.Namespace) {
				out = append(out, s)
			}
		}
		reply(w, out)
	}
	mux.HandleFunc("GET /v1/services", svcs)
	mux.HandleFunc("GET /v1/namespaces/{ns}/services", svcs)
	mux.HandleFunc("GET /v1/namespaces/{ns}/events", func(w http.ResponseWriter, r *http.Request) {
		out := []api.ObjectEvent{}
		for _, p := range f.pods {
			if p.Namespace == r.PathValue("ns") && (r.URL.Query().Get("object") == "" || r.URL.Query().Get("object") == "pod/"+p.Name) {
				for _, e := range api.RecentEvents(p.Status.Events, testNow) {
					out = append(out, api.ObjectEvent{Object: "pod/" + p.Name, Node: p.Node, Event: e})
				}
			}
		}
		reply(w, out)
	})
	mux.HandleFunc("GET /v1/namespaces/{ns}/pods/{pod}/logs", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.logQuery = r.URL.Query()
		f.mu.Unlock()
		if r.PathValue("pod") != "web-a" {
			w.WriteHeader(http.StatusNotFound)
			reply(w, api.ErrorResponse{Error: "pod " + r.PathValue("ns") + "/" + r.PathValue("pod") + " not found"})
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("listening on :8080\nGET /healthz 200\n"))
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer s3cret" {
			w.WriteHeader(http.StatusUnauthorized)
			reply(w, api.ErrorResponse{Error: "missing or wrong token"})
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func fixtures() *fakeAPI {
	at := func(ago time.Duration) time.Time { return testNow.Add(-ago) }
	app := api.Container{Name: "app", Image: "flotilla.local/demo:v1", Ports: []api.Port{{ContainerPort: 8080}},
		CPURequest: 100, MemoryRequest: 64, MemoryLimit: 128,
		ReadinessProbe: &api.Probe{HTTPGet: &api.HTTPGetProbe{Path: "/healthz", Port: 8080}}}
	return &fakeAPI{
		nodes: []api.Node{
			{Name: "n2", Address: "10.0.1.11", PodCIDR: "10.244.1.0/24", CPUMillis: 2000, MemoryMiB: 4096, Status: api.NodeReady, Unschedulable: true, Version: "0.1.0"},
			{Name: "n1", Address: "10.0.1.10", PodCIDR: "10.244.0.0/24", CPUMillis: 4000, MemoryMiB: 8192, Status: api.NodeReady, Server: true, Version: "0.1.0", Labels: map[string]string{"zone": "a"}},
		},
		pods: []api.Pod{
			{Namespace: "default", Name: "web-b", Deployment: "web", Node: "n2", Generation: 2, Containers: []api.Container{app}, CreatedAt: at(3 * time.Hour),
				Status: api.PodStatus{Phase: api.PodPending, IP: "10.244.1.7", Reason: api.ReasonCrashLoopBackOff,
					Containers: []api.ContainerStatus{{Name: "app", State: api.ContainerWaiting, RestartCount: 4, Reason: api.ReasonCrashLoopBackOff, LastExitCode: 2}}}},
			{Namespace: "default", Name: "web-a", Deployment: "web", Node: "n1", Generation: 2, Labels: map[string]string{"app": "web"}, Containers: []api.Container{app}, CreatedAt: at(90 * time.Second),
				Status: api.PodStatus{Phase: api.PodRunning, Ready: true, IP: "10.244.0.5", StartedAt: at(80 * time.Second),
					Containers: []api.ContainerStatus{{Name: "app", State: api.ContainerRunning, Ready: true, RestartCount: 1, LastExitCode: 137, LastLog: []string{"bye\x1b[2J"}}},
					Events: []api.Event{
						{Time: at(90 * time.Second), Type: api.EventNormal, Reason: api.EventScheduled, Message: "Assigned default/web-a to node n1"},
						{Time: at(60 * time.Second), FirstTime: at(85 * time.Second), Count: 2, Type: api.EventNormal, Reason: api.EventStarted, Message: "Started container app"},
						{Time: at(2 * time.Hour), Type: api.EventWarning, Reason: api.EventExited, Message: "expired: not shown"},
					}}},
			{Namespace: "shop", Name: "db-a", Deployment: "db", Node: "n1", Containers: []api.Container{{Name: "pg", Image: "pg:16"}}, CreatedAt: at(50 * time.Hour),
				Status: api.PodStatus{Phase: api.PodRunning, Ready: true, IP: "10.244.0.9", Containers: []api.ContainerStatus{{Name: "pg", State: api.ContainerRunning, Ready: true}}}},
		},
		deps: []api.Deployment{
			{Namespace: "default", Name: "web", Replicas: 2, Generation: 2, Containers: []api.Container{app},
				Status: api.DeploymentStatus{Replicas: 2, UpdatedReplicas: 2, ReadyReplicas: 1, Failure: "pod web-b: crash loop, exit code 2"}},
			{Namespace: "shop", Name: "db", Replicas: 1, Generation: 1, Containers: []api.Container{{Name: "pg", Image: "pg:16"}},
				Status: api.DeploymentStatus{Replicas: 1, UpdatedReplicas: 1, ReadyReplicas: 1, UpdatedReadyReplicas: 1, Complete: true}},
		},
		svcs: []api.Service{
			{Namespace: "default", Name: "web", Type: api.ServiceNodePort, ClusterIP: "10.96.0.10", Selector: map[string]string{"app": "web"},
				Ports: []api.ServicePort{{Port: 80, TargetPort: "8080", NodePort: 30080}}},
			{Namespace: "shop", Name: "db", ClusterIP: "10.96.0.11", Ports: []api.ServicePort{{Port: 5432}, {Name: "dns", Port: 53, Protocol: "udp"}}},
		},
	}
}

// runCLI runs the CLI against srv with the environment env and returns
// the exit code, stdout and stderr.
func runCLI(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	c := &cli{stdout: &out, stderr: &errOut, getenv: func(k string) string { return env[k] }, now: func() time.Time { return testNow }, version: "0.1.0-test"}
	code := execute(context.Background(), c, args)
	return code, out.String(), errOut.String()
}

func TestCommands(t *testing.T) {
	f := fixtures()
	srv := httptest.NewServer(f.handler())
	t.Cleanup(srv.Close)
	env := map[string]string{api.EnvAddr: srv.URL, api.EnvToken: "s3cret"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"nodes", []string{"nodes"}, `
NAME   STATUS                     ROLE     ADDRESS     CPU   MEMORY   VERSION
n1     ready                      server   10.0.1.10   4     8Gi      0.1.0
n2     ready,SchedulingDisabled   client   10.0.1.11   2     4Gi      0.1.0
`},
		{"nodes wide", []string{"nodes", "-o", "wide"}, `
NAME   STATUS                     ROLE     ADDRESS     CPU   MEMORY   VERSION   POD-CIDR        LABELS
n1     ready                      server   10.0.1.10   4     8Gi      0.1.0     10.244.0.0/24   zone=a
n2     ready,SchedulingDisabled   client   10.0.1.11   2     4Gi      0.1.0     10.244.1.0/24   <none>
`},
		{"pods", []string{"pods"}, `
NAME    READY   STATUS             RESTARTS   AGE
web-a   1/1     Running            1          90s
web-b   0/1     CrashLoopBackOff   4          3h
`},
		{"pods wide in a namespace", []string{"pods", "-n", "shop", "-o", "wide"}, `
NAME   READY   STATUS    RESTARTS   AGE    IP           NODE   DEPLOYMENT
db-a   1/1     Running   0          2d2h   10.244.0.9   n1     db
`},
		{"pods of every namespace", []string{"pods", "-A"}, `
NAMESPACE   NAME    READY   STATUS             RESTARTS   AGE
default     web-a   1/1     Running            1          90s
default     web-b   0/1     CrashLoopBackOff   4          3h
shop        db-a    1/1     Running            0          2d2h
`},
		{"deployments", []string{"deployments", "-A"}, `
NAMESPACE   NAME   READY   UP-TO-DATE   GENERATION   ROLLOUT
default     web    1/2     2            2            Failed: pod web-b: crash loop, exit code 2
shop        db     1/1     1            1            Complete
`},
		{"services", []string{"svc", "-A", "-o", "wide"}, `
NAMESPACE   NAME   TYPE         CLUSTER-IP   PORTS             SELECTOR
default     web    node_port    10.96.0.10   80:30080/TCP      app=web
shop        db     cluster_ip   10.96.0.11   5432/TCP,53/UDP   <none>
`},
		{"describe pod", []string{"describe", "pod", "web-a"}, `
Name:        web-a
Namespace:   default
Deployment:  web (generation 2)
Node:        n1
Created:     2026-12-01T02:58:30Z (90s ago)
Started:     2026-12-01T02:58:40Z (80s ago)
Labels:      app=web
Status:      Running
Ready:       true
IP:          10.244.0.5
Containers:
  app:
    Image:           flotilla.local/demo:v1
    Ports:           8080/tcp
    Requests:        cpu 100m, memory 64Mi
    Limits:          memory 128Mi
    State:           running
    Ready:           true
    Restarts:        1
    Last exit code:  137
    Readiness:       http-get :8080/healthz delay=0s timeout=1s period=10s #success=1 #failure=3
    Last log lines:
      bye [2J
Events:
  TYPE    REASON     AGE                MESSAGE
  Normal  Scheduled  90s                Assigned default/web-a to node n1
  Normal  Started    60s (x2 over 25s)  Started container app
`},
		{"describe node", []string{"describe", "node", "n1"}, `
Name:       n1
Role:       server
Status:     ready
Address:    10.0.1.10
Pod CIDR:   10.244.0.0/24
Labels:     zone=a
Version:    0.1.0
Capacity:   cpu 4, memory 8Gi
Requested:  cpu 100m, memory 64Mi
Pods (2):
  NAMESPACE  NAME   READY  STATUS   RESTARTS  AGE
  default    web-a  1/1    Running  1         90s
  shop       db-a   1/1    Running  0         2d2h
`},
		{"events", []string{"events", "--pod", "web-a"}, `
LAST SEEN   TYPE     REASON      OBJECT      COUNT   MESSAGE
90s         Normal   Scheduled   pod/web-a   1       Assigned default/web-a to node n1
60s         Normal   Started     pod/web-a   2       Started container app
`},
		{"logs", []string{"logs", "web-a"}, "\nlistening on :8080\nGET /healthz 200\n"},
		{"version", []string{"version"}, "\nflotilla 0.1.0-test\nagent 0.1.0 at " + srv.URL + " (node n1, leader n1)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, env, tt.args...)
			if code != 0 {
				t.Fatalf("exit %d; stderr: %s", code, errOut)
			}
			if want := strings.TrimPrefix(tt.want, "\n"); out != want {
				t.Errorf("output:\n%s\nwant:\n%s", out, want)
			}
		})
	}
}

func TestPodsJSON(t *testing.T) {
	srv := httptest.NewServer(fixtures().handler())
	t.Cleanup(srv.Close)
	code, out, errOut := runCLI(t, map[string]string{api.EnvAddr: srv.URL, api.EnvToken: "s3cret"}, "pods", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var pods []api.Pod
	if err := json.Unmarshal([]byte(out), &pods); err != nil {
		t.Fatalf("-o json is not a JSON list of pods: %v\n%s", err, out)
	}
	if len(pods) != 2 || pods[0].Name != "web-a" || len(pods[0].Status.Events) != 3 {
		t.Errorf("got %d pods %+v", len(pods), pods)
	}
}

func TestLogsOptions(t *testing.T) {
	f := fixtures()
	srv := httptest.NewServer(f.handler())
	t.Cleanup(srv.Close)
	env := map[string]string{api.EnvAddr: srv.URL, api.EnvToken: "s3cret"}
	tests := []struct {
		args []string
		want url.Values
	}{
		{[]string{"logs", "web-a"}, url.Values{}},
		{[]string{"logs", "-f", "-c", "app", "--tail", "20", "web-a"}, url.Values{"follow": {"true"}, "container": {"app"}, "tail": {"20"}}},
		{[]string{"logs", "--previous", "--since", "5m", "web-a"}, url.Values{"previous": {"true"}, "since": {"5m0s"}}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			if code, _, errOut := runCLI(t, env, tt.args...); code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			f.mu.Lock()
			got := f.logQuery
			f.mu.Unlock()
			for k, v := range tt.want {
				if got.Get(k) != v[0] {
					t.Errorf("query %s=%q, want %q (query %v)", k, got.Get(k), v[0], got)
				}
			}
			for k := range got {
				if _, ok := tt.want[k]; !ok {
					t.Errorf("query has %s=%q, not asked for", k, got.Get(k))
				}
			}
		})
	}
}

// Errors say what to do.
func TestErrors(t *testing.T) {
	srv := httptest.NewServer(fixtures().handler())
	t.Cleanup(srv.Close)
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want []string // in stderr
	}{
		{"no token", map[string]string{api.EnvAddr: srv.URL}, []string{"pods"}, []string{"no API token", "FLOTILLA_TOKEN", "--token-file"}},
		{"wrong token", map[string]string{api.EnvAddr: srv.URL, api.EnvToken: "nope"}, []string{"pods"}, []string{"HTTP 401", "refused the token", "FLOTILLA_TOKEN"}},
		{"nothing listens", map[string]string{api.EnvAddr: closedURL, api.EnvToken: "s3cret"}, []string{"nodes"}, []string{"Nothing answers", "$FLOTILLA_ADDR", "--addr"}},
		{"default address", map[string]string{api.EnvToken: "s3cret"}, []string{"nodes", "--addr", closedURL}, []string{"from --addr"}},
		{"missing CA file", map[string]string{api.EnvAddr: srv.URL, api.EnvToken: "s3cret", api.EnvCACert: filepath.Join(dir, "nope.pem")}, []string{"nodes"}, []string{"FLOTILLA_CACERT", "no such file"}},
		{"bad output", map[string]string{api.EnvAddr: srv.URL, api.EnvToken: "s3cret"}, []string{"pods", "-o", "yaml"}, []string{`-o "yaml": use json or wide`}},
		{"unknown pod", map[string]string{api.EnvAddr: srv.URL, api.EnvToken: "s3cret"}, []string{"describe", "pod", "nope"}, []string{`no pod "nope" in namespace default`, "flotilla pods -n default"}},
		{"logs of an unknown pod", map[string]string{api.EnvAddr: srv.URL, api.EnvToken: "s3cret"}, []string{"logs", "nope"}, []string{"pod default/nope not found"}},
		{"bad tail", map[string]string{api.EnvAddr: srv.URL, api.EnvToken: "s3cret"}, []string{"logs", "--tail", "1000000", "web-a"}, []string{"tail"}},
		{"no pod name", map[string]string{api.EnvAddr: srv.URL, api.EnvToken: "s3cret"}, []string{"logs"}, []string{"accepts 1 arg"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := runCLI(t, tt.env, tt.args...)
			if code == 0 {
				t.Fatal("exit 0, want a failure")
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q does not say %q", errOut, w)
				}
			}
		})
	}
	t.Run("token file", func(t *testing.T) {
		if code, _, errOut := runCLI(t, map[string]string{api.EnvAddr: srv.URL, api.EnvToken: "nope"}, "nodes", "--token-file", tokenFile); code != 0 {
			t.Errorf("--token-file did not override FLOTILLA_TOKEN: %s", errOut)
		}
	})
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		code, out, errOut := runCLI(t, nil, "completion", shell)
		if code != 0 || !strings.Contains(out, "flotilla") {
			t.Errorf("completion %s: exit %d, %d bytes; %s", shell, code, len(out), errOut)
		}
	}
}

func TestHumanDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 90 * time.Second: "90s", 5*time.Minute + 30*time.Second: "5m30s", 30 * time.Minute: "30m",
		4*time.Hour + 5*time.Minute: "4h5m", 20 * time.Hour: "20h", 50 * time.Hour: "2d2h", 30 * 24 * time.Hour: "30d",
		3 * 365 * 24 * time.Hour: "3y", -time.Second: "0s",
	} {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestExecNeedsDash(t *testing.T) {
	var out, errOut bytes.Buffer
	c := &cli{stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }, now: func() time.Time { return testNow }}
	if code := execute(context.Background(), c, []string{"exec", "web", "sh"}); code != 1 || !strings.Contains(errOut.String(), "flotilla exec POD -- COMMAND") {
		t.Errorf("exec without --: code %d, stderr %q", code, errOut.String())
	}
}

func TestScheduleCommands(t *testing.T) {
	f := fixtures()
	srv := httptest.NewServer(f.handler())
	t.Cleanup(srv.Close)
	env := map[string]string{api.EnvAddr: srv.URL, api.EnvToken: "s3cret"}
	for _, tt := range []struct {
		args []string
		out  string
	}{
		{[]string{"cordon", "n1"}, "node/n1 cordoned\n"},
		{[]string{"uncordon", "n1"}, "node/n1 uncordoned\n"},
		{[]string{"drain", "n1", "--wait", "10s"}, "node/n1 draining\nnode/n1 drained\n"},
	} {
		if code, out, errOut := runCLI(t, env, tt.args...); code != 0 || out != tt.out {
			t.Errorf("flotilla %v: code %d, stdout %q, stderr %q; want %q", tt.args, code, out, errOut, tt.out)
		}
	}
	want := []string{"n1 unschedulable=true draining=false", "n1 unschedulable=false draining=false", "n1 unschedulable=true draining=true"}
	if !slices.Equal(f.schedules, want) {
		t.Errorf("schedules sent: %q, want %q", f.schedules, want)
	}
	if code, _, errOut := runCLI(t, env, "cordon", "N1_bad"); code != 1 || !strings.Contains(errOut, "node \"N1_bad\"") {
		t.Errorf("cordon of a bad name: code %d, %q", code, errOut)
	}
}

func TestNodeStatusShowsConditions(t *testing.T) {
	n := api.Node{Status: "ready", Unschedulable: true, Conditions: []api.NodeCondition{{Type: api.NodeConditionDiskPressure, Since: testNow.Add(-5 * time.Minute), Message: "data dir 93% full"}}}
	if got := nodeStatus(&n); got != "ready,DiskPressure,SchedulingDisabled" {
		t.Errorf("nodeStatus = %q", got)
	}
	var b bytes.Buffer
	if err := describeNode(&b, &n, nil, testNow); err != nil || !strings.Contains(b.String(), "Condition:  DiskPressure since 5m: data dir 93% full") {
		t.Errorf("describe node: %v\n%s", err, b.String())
	}
}
