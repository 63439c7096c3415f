package acceptance

// The services lab shared by TestAccServices and BenchmarkServices: a
// fleet of 3 servers and 1 client; a "caller" pod on the client (node A),
// three "web" pods of the demo app on the servers, and the services in
// front of them. Requests "from a pod" are made by the caller's demo app
// (GET /fetch, /lookup): it runs in the pod's container, so it resolves
// names through the pod's /etc/resolv.conf as any workload would.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/api"
)

// Ports of the web pods (the demo app) and of the services in front.
const (
	webHTTPPort = 8080 // container port "http"
	webUDPPort  = 9053 // container port "echo" (UDP_PORT: answers each datagram with the pod's name)
	svcUDPPort  = 7    // the web service's "echo" port
)

type svcLab struct {
	f      *fleet
	via    *fleetNode // a server, for API calls
	nodeA  *fleetNode // the client: runs the caller pod
	byName map[string]*fleetNode
	caller api.Pod
	// Cluster IPs by service name, and web-np's node port.
	vip      map[string]string
	nodePort int
}

// webDeployment is the demo app behind the services: 3 replicas kept off
// the caller's node, a UDP responder, and a readiness probe on /healthz
// every second that one failure fails, so POST /ready?ok=false takes a pod
// out of its services within about a second.
func webDeployment() *api.Deployment {
	return &api.Deployment{
		Namespace: api.DefaultNamespace, Name: "web", Replicas: 3,
		Labels:       map[string]string{"app": "web"},
		AntiAffinity: []api.AntiAffinity{{Labels: map[string]string{"app": "caller"}, Required: true}},
		Containers: []api.Container{{
			Name: "app", Image: "flotilla.local/demo:v1",
			Env: map[string]string{"UDP_PORT": strconv.Itoa(webUDPPort)},
			Ports: []api.Port{
				{Name: "http", ContainerPort: webHTTPPort},
				{Name: "echo", ContainerPort: webUDPPort, Protocol: "udp"},
			},
			ReadinessProbe: &api.Probe{HTTPGet: &api.HTTPGetProbe{Path: "/healthz", Port: webHTTPPort}, PeriodSeconds: 1, FailureThreshold: 1},
		}},
	}
}

// labServices are the services the tests and benchmarks use.
func labServices() []*api.Service {
	web := map[string]string{"app": "web"}
	return []*api.Service{
		{Namespace: api.DefaultNamespace, Name: "web", Selector: web, Ports: []api.ServicePort{
			{Name: "http", Port: 80, TargetPort: "http"},
			{Name: "echo", Protocol: "udp", Port: svcUDPPort, TargetPort: "echo"},
		}},
		{Namespace: api.DefaultNamespace, Name: "web-np", Selector: web, Type: api.ServiceNodePort,
			Ports: []api.ServicePort{{Port: 80, TargetPort: strconv.Itoa(webHTTPPort)}}},
		{Namespace: api.DefaultNamespace, Name: "web-sticky", Selector: web, SessionAffinity: api.AffinityClientIP,
			Ports: []api.ServicePort{{Port: 80, TargetPort: "http"}}},
		{Namespace: api.DefaultNamespace, Name: "nobody", Selector: map[string]string{"app": "nobody"},
			Ports: []api.ServicePort{{Port: 80, TargetPort: strconv.Itoa(webHTTPPort)}}},
	}
}

// newSvcLab places the caller on the client node (the servers cordoned
// meanwhile), then web on the servers, creates the services and waits
// until the caller reaches web through its virtual IP.
func newSvcLab(tb testing.TB, f *fleet) *svcLab {
	tb.Helper()
	l := &svcLab{f: f, via: f.nodes[0], byName: map[string]*fleetNode{}, vip: map[string]string{}}
	for _, n := range f.nodes {
		l.byName[n.Name] = n
		if !n.server {
			l.nodeA = n
		}
	}
	if l.nodeA == nil {
		tb.Fatal("the services lab needs a client node")
	}
	servers := f.nodes[:3]
	schedule := func(unschedulable bool) {
		for _, s := range servers {
			apiRetry(tb, fmt.Sprintf("cordon %s: %v", s.Name, unschedulable), func(ctx context.Context) error {
				_, err := l.via.client.SetNodeSchedule(ctx, s.Name, api.NodeSchedule{Unschedulable: unschedulable})
				return err
			})
		}
	}
	schedule(true)
	caller := demoDeployment("caller", 1)
	caller.Labels = map[string]string{"app": "caller"}
	createSpec(tb, l.via, caller)
	waitUntil(tb, 2*time.Minute, "caller ready on "+l.nodeA.Name, func(ctx context.Context) error {
		if err := readyElsewhere(ctx, l.via, "caller", 1, ""); err != nil {
			return err
		}
		pods, err := podsOn(ctx, l.via, l.nodeA.Name, "caller")
		if err != nil || len(pods) != 1 {
			return fmt.Errorf("caller pods on %s: %d (%v)", l.nodeA.Name, len(pods), err)
		}
		l.caller = pods[0]
		return nil
	})
	schedule(false)
	createSpec(tb, l.via, webDeployment())
	for _, s := range labServices() {
		var got *api.Service
		apiRetry(tb, "create service "+s.Name, func(ctx context.Context) error {
			var err error
			got, err = l.via.client.CreateService(ctx, s)
			if api.IsConflict(err) {
				got, err = l.via.client.GetService(ctx, s.Namespace, s.Name)
			}
			return err
		})
		if got.ClusterIP == "" {
			tb.Fatalf("service %s has no cluster IP: %+v", s.Name, got)
		}
		l.vip[s.Name] = got.ClusterIP
		if s.Type == api.ServiceNodePort {
			l.nodePort = got.Ports[0].NodePort
		}
	}
	tb.Logf("services: %v; web-np node port %d; caller %s on %s at %s", l.vip, l.nodePort, l.caller.Name, l.nodeA.Name, l.caller.Status.IP)
	l.waitWeb(tb, 3*time.Minute)
	return l
}

// waitWeb waits until web's 3 pods are ready, the web service lists them
// as ready endpoints, and the caller gets an answer from each through the
// virtual IP.
func (l *svcLab) waitWeb(tb testing.TB, timeout time.Duration) {
	tb.Helper()
	waitUntil(tb, timeout, "web ready and reached through its virtual IP", func(ctx context.Context) error {
		if err := readyElsewhere(ctx, l.via, "web", 3, l.nodeA.Name); err != nil {
			return err
		}
		ep, err := l.via.client.GetEndpoints(ctx, api.DefaultNamespace, "web")
		if err != nil {
			return err
		}
		ready := 0
		for _, a := range ep.Addresses {
			if a.Ready {
				ready++
			}
		}
		if ready != 3 {
			return fmt.Errorf("web has %d ready endpoints, want 3: %+v", ready, ep.Addresses)
		}
		res, err := l.fetch(ctx, "n=30&timeout=1s&url="+url.QueryEscape("http://"+l.vip["web"]+"/hostname"))
		if err != nil {
			return err
		}
		if res.Errors > 0 || len(res.Answers) != 3 {
			return fmt.Errorf("through %s: answers %v, failures %v %q", l.vip["web"], res.counts(), res.failureCounts(), res.Samples)
		}
		return nil
	})
}

// webPods returns web's live pods.
func (l *svcLab) webPods(tb testing.TB) []api.Pod {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pods, err := livePods(ctx, l.via.client, "web")
	if err != nil {
		tb.Fatal(err)
	}
	return pods
}

// podNetNS is the pod's network namespace file on its node.
func (l *svcLab) podNetNS(p api.Pod) string {
	return "/run/netns/" + l.podNetNSName(p)
}

func (l *svcLab) podNetNSName(p api.Pod) string {
	return l.byName[p.Node].NetNS + "p-" + p.Namespace + "_" + p.Name
}

// fetchTally and fetchResult mirror the demo app's /fetch answer.
type fetchTally struct {
	Count int       `json:"count"`
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
}

type fetchResult struct {
	Requests  int                    `json:"requests"`
	OK        int                    `json:"ok"`
	Errors    int                    `json:"errors"`
	Answers   map[string]*fetchTally `json:"answers"`
	Failures  map[string]*fetchTally `json:"failures"`
	Samples   []string               `json:"error_samples"`
	Started   time.Time              `json:"started"`
	TookMS    float64                `json:"took_ms"`
	SlowestMS float64                `json:"slowest_ms"`
}

func (r *fetchResult) counts() map[string]int {
	m := map[string]int{}
	for k, v := range r.Answers {
		m[k] = v.Count
	}
	return m
}

func (r *fetchResult) failureCounts() map[string]int {
	m := map[string]int{}
	for k, v := range r.Failures {
		m[k] = v.Count
	}
	return m
}

// lastFailure is the start of the last failed request, or zero.
func (r *fetchResult) lastFailure() time.Time {
	var last time.Time
	for _, f := range r.Failures {
		if f.Last.After(last) {
			last = f.Last
		}
	}
	return last
}

// fetch asks the caller pod's demo app to make requests (GET /fetch with
// query), from inside the pod, and returns what it counted.
func (l *svcLab) fetch(ctx context.Context, query string) (*fetchResult, error) {
	out, err := l.callerGet(ctx, "/fetch?"+query)
	if err != nil {
		return nil, err
	}
	var res fetchResult
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("fetch?%s: %v: %s", query, err, out)
	}
	return &res, nil
}

// lookupResult mirrors the demo app's /lookup answer.
type lookupResult struct {
	Addrs []string `json:"addrs"`
	SRV   []struct {
		Target string `json:"target"`
		Port   int    `json:"port"`
	} `json:"srv"`
	Error    string  `json:"error"`
	NotFound bool    `json:"not_found"`
	TookMS   float64 `json:"took_ms"`
}

// lookup resolves name (type A or SRV) in the caller pod, through its
// resolv.conf.
func (l *svcLab) lookup(ctx context.Context, typ, name string) (*lookupResult, error) {
	out, err := l.callerGet(ctx, "/lookup?"+url.Values{"name": {name}, "type": {typ}, "timeout": {"30s"}}.Encode())
	if err != nil {
		return nil, err
	}
	var res lookupResult
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("lookup %s %s: %v: %s", typ, name, err, out)
	}
	return &res, nil
}

// callerGet GETs a path of the caller's demo app on 127.0.0.1, from inside
// the caller pod's network namespace.
func (l *svcLab) callerGet(ctx context.Context, path string) ([]byte, error) {
	return curlIn(ctx, l.podNetNS(l.caller), "-sf", "-m", "400", "http://127.0.0.1:8080"+path)
}

// curlIn runs curl in the network namespace nsPath.
func curlIn(ctx context.Context, nsPath string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + nsPath, "--", "curl"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("curl %s in %s: %w: %s", strings.Join(args, " "), nsPath, err, stderr.String())
	}
	return out, nil
}

// stamp is one request of a nodeStream: when it started and what came back.
type stamp struct {
	at     time.Time
	ok     bool
	answer string // the body, or curl's exit code when !ok
	// connect is curl's time_connect, in seconds: 0 when no connection
	// was made.
	connect string
}

// nodeStream requests u with curl from inside node n's network namespace
// (the node itself, not a pod) every gap for d, each on a new connection
// with a 1 s bound, and returns every request's start and answer.
func nodeStream(ctx context.Context, n *fleetNode, u string, d, gap time.Duration) ([]stamp, error) {
	script := fmt.Sprintf(`end=$(( ${EPOCHREALTIME%%.*} + %d ))
while [ "${EPOCHREALTIME%%.*}" -lt "$end" ]; do
  t=$EPOCHREALTIME
  a=$(curl -s --connect-timeout 1 -m 1 -w ' %%{time_connect}' %q); rc=$?; a=${a//$'\n'/ }
  if [ "$rc" = 0 ]; then echo "$t ok $a"; else echo "$t fail $rc $a"; fi
  sleep %s
done`, int(d.Seconds()), u, strconv.FormatFloat(gap.Seconds(), 'f', 3, 64))
	out, err := n.Exec(ctx, "bash", "-c", script)
	if err != nil {
		return nil, fmt.Errorf("request loop on %s: %w: %s", n.Name, err, tail(string(out), 5))
	}
	var stamps []stamp
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		sec, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("request loop on %s: bad line %q", n.Name, line)
		}
		s := stamp{at: time.Unix(0, int64(sec*1e9)), ok: f[1] == "ok"}
		if len(f) > 2 {
			s.answer = f[2]
		}
		if len(f) > 3 {
			s.connect = f[3]
		}
		stamps = append(stamps, s)
	}
	return stamps, nil
}

// streamSummary counts a stream's answers and failures.
func streamSummary(stamps []stamp) (answers map[string]int, failures int) {
	answers = map[string]int{}
	for _, s := range stamps {
		if s.ok {
			answers[s.answer]++
		} else {
			failures++
		}
	}
	return answers, failures
}

// failedAt lists a stream's failed requests as "HH:MM:SS.mmm curl exit N",
// at most 10, for messages.
func failedAt(stamps []stamp) []string {
	var out []string
	for _, s := range stamps {
		if !s.ok && len(out) < 10 {
			out = append(out, s.at.Format("15:04:05.000")+" curl exit "+s.answer+" connected after "+s.connect+" s")
		}
	}
	return out
}

// lastAnswerFrom is the start of the last request answered by pod, or zero.
func lastAnswerFrom(stamps []stamp, pod string) time.Time {
	var last time.Time
	for _, s := range stamps {
		if s.ok && s.answer == pod && s.at.After(last) {
			last = s.at
		}
	}
	return last
}

func lastStreamFailure(stamps []stamp) time.Time {
	var last time.Time
	for _, s := range stamps {
		if !s.ok && s.at.After(last) {
			last = s.at
		}
	}
	return last
}

// since is t - t0, or 0 when t is zero or before t0.
func since(t, t0 time.Time) time.Duration {
	if t.IsZero() || t.Before(t0) {
		return 0
	}
	return t.Sub(t0)
}

// killPod kills every process in the pod's network namespace with SIGKILL:
// the container crashes; its network stays until the node tears it down.
func (l *svcLab) killPod(tb testing.TB, p api.Pod) {
	tb.Helper()
	out, err := exec.Command("ip", "netns", "pids", l.podNetNSName(p)).Output()
	if err != nil {
		tb.Fatalf("pids in %s: %v", l.podNetNSName(p), err)
	}
	pids := strings.Fields(string(out))
	if len(pids) == 0 {
		tb.Fatalf("no process in pod %s's network namespace", p.Name)
	}
	for _, s := range pids {
		pid, _ := strconv.Atoi(s)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			tb.Fatalf("kill %d of pod %s: %v", pid, p.Name, err)
		}
	}
}

// setReady flips the demo app's /healthz in pod p, from inside its node.
func (l *svcLab) setReady(ctx context.Context, p api.Pod, ok bool) error {
	_, err := curlIn(ctx, l.byName[p.Node].NetNSPath(), "-sf", "-m", "5", "-X", "POST",
		fmt.Sprintf("http://%s:%d/ready?ok=%v", p.Status.IP, webHTTPPort, ok))
	return err
}

// apiRetry retries an API write for a minute (a leader change, a node
// still joining).
func apiRetry(tb testing.TB, what string, write func(context.Context) error) {
	tb.Helper()
	waitUntil(tb, time.Minute, what, func(ctx context.Context) error {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return write(wctx)
	})
}

func createSpec(tb testing.TB, via *fleetNode, d *api.Deployment) {
	tb.Helper()
	apiRetry(tb, "create deployment "+d.Name, func(ctx context.Context) error {
		_, err := via.client.CreateDeployment(ctx, d)
		if api.IsConflict(err) {
			return nil
		}
		return err
	})
}

// sortedKeys lists a map's keys in order, for messages.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// iptablesSave is every table's rules in node n's network namespace.
func iptablesSave(ctx context.Context, n *fleetNode) (string, error) {
	out, err := n.Exec(ctx, "iptables-save")
	if err != nil {
		return "", fmt.Errorf("iptables-save on %s: %w: %s", n.Name, err, out)
	}
	return string(out), nil
}

// flotillaLines returns the lines of text that mention flotilla in any
// case.
func flotillaLines(text string) []string {
	var lines []string
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(strings.ToLower(line), "flotilla") {
			lines = append(lines, line)
		}
	}
	return slices.Clip(lines)
}
