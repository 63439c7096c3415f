package acceptance

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/flotilla-io/flotilla/api"
)

// outOfRotationWithin bounds how long a pod that died or failed its
// readiness probe may still be sent requests, on any node. The issue's
// goal is about a second (a 1 s probe, then the endpoint change reaches
// every node's rules); the bound leaves room for a busy 2-core CI machine.
const outOfRotationWithin = 5 * time.Second

// TestAccServices checks issue 10's services as a user would, on one lab
// fleet (3 servers, 1 client; see services_lab_test.go): a pod on one node
// calls a service by name and by virtual IP and is answered evenly by the
// pods on the other nodes; nodes reach virtual IPs and node ports; a pod
// that dies or fails its readiness probe leaves the rotation within
// seconds on every node; a service without endpoints refuses at once;
// session affinity; UDP; cluster DNS (SRV, pod names, outside names); an
// agent restart under load fails no connection; a flotilla_service applied
// with terraform answers on its cluster_ip; and `flotilla-agent cleanup`
// leaves no rule, chain or route behind.
func TestAccServices(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 3, 1)
	l := newSvcLab(t, f)
	webURL := func(host string) string { return "http://" + host + "/hostname" }

	t.Run("a pod calls a service by DNS name and by virtual IP: pods on the other nodes answer, evenly", func(t *testing.T) {
		pods := l.webPods(t)
		nodes := map[string]bool{}
		names := map[string]bool{}
		for _, p := range pods {
			nodes[p.Node] = true
			names[p.Name] = true
			if p.Node == l.caller.Node {
				t.Fatalf("web pod %s runs on the caller's node %s", p.Name, p.Node)
			}
		}
		if len(nodes) < 2 {
			t.Fatalf("web's pods run on %d node(s), want at least 2: %v", len(nodes), nodes)
		}
		ctx := context.Background()
		for _, tc := range []struct {
			what string
			host string
			n    int
		}{
			{"short name", "web", 300},
			{"virtual IP", l.vip["web"], 300},
			{"name.namespace", "web.default", 30},
			{"fully qualified name", "web.default.svc.cluster.local", 30},
		} {
			res, err := l.fetch(ctx, fmt.Sprintf("n=%d&url=%s", tc.n, url.QueryEscape(webURL(tc.host))))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s (%s): %d requests in %.0f ms: %v", tc.what, tc.host, res.Requests, res.TookMS, res.counts())
			if res.OK != tc.n || res.Errors != 0 {
				t.Errorf("%s: %d of %d answered; failures %v %q", tc.what, res.OK, tc.n, res.failureCounts(), res.Samples)
			}
			for answer, c := range res.counts() {
				if !names[answer] {
					t.Errorf("%s: answer %q (%d times) is not a web pod (%v)", tc.what, answer, c, sortedKeys(names))
				}
			}
			// Each of 3 backends gets at least 20%: with a fair pick a
			// backend falls below that in 300 tries with odds under 1e-6.
			for name := range names {
				if c := res.counts()[name]; tc.n >= 300 && c < tc.n/5 {
					t.Errorf("%s: pod %s answered %d of %d requests, want at least %d (20%%): %v", tc.what, name, c, tc.n, tc.n/5, res.counts())
				}
			}
		}
	})

	t.Run("every node reaches the virtual IP from its own network namespace", func(t *testing.T) {
		names := map[string]bool{}
		for _, p := range l.webPods(t) {
			names[p.Name] = true
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		streams := make([][]stamp, len(f.nodes))
		errs := make([]error, len(f.nodes))
		var wg sync.WaitGroup
		for i, n := range f.nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				streams[i], errs[i] = nodeStream(ctx, n, webURL(l.vip["web"]), 2*time.Second, 20*time.Millisecond)
			}()
		}
		wg.Wait()
		for i, n := range f.nodes {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			stamps := streams[i]
			answers, failures := streamSummary(stamps)
			t.Logf("%s: %d requests: %v, %d failed", n.Name, len(stamps), answers, failures)
			if failures > 0 || len(stamps) < 5 {
				t.Errorf("%s: %d of %d requests to %s failed", n.Name, failures, len(stamps), l.vip["web"])
			}
			for a := range answers {
				if !names[a] {
					t.Errorf("%s: answer %q is not a web pod", n.Name, a)
				}
			}
		}
	})

	t.Run("a node_port service answers on every node's address", func(t *testing.T) {
		names := map[string]bool{}
		for _, p := range l.webPods(t) {
			names[p.Name] = true
		}
		// From the machine the lab hangs off, as a client outside the fleet.
		client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		defer client.CloseIdleConnections()
		for _, n := range f.nodes {
			seen := map[string]int{}
			for range 12 {
				u := fmt.Sprintf("http://%s:%d/hostname", n.IP, l.nodePort)
				resp, err := client.Get(u)
				if err != nil {
					t.Errorf("%s: %v", u, err)
					break
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				seen[strings.TrimSpace(string(body))]++
			}
			t.Logf("%s:%d answered by %v", n.IP, l.nodePort, seen)
			for a := range seen {
				if !names[a] {
					t.Errorf("%s:%d: answer %q is not a web pod", n.IP, l.nodePort, a)
				}
			}
		}
	})

	t.Run("a host outside the cluster reaches pods through node ports only, never by pod IP; nodes reach every pod", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		byName := map[string]*fleetNode{}
		for _, n := range f.nodes {
			byName[n.Name] = n
		}
		// A host on the nodes' network that routes the pods' IPs to their
		// nodes, as a neighbour on a cloud subnet could.
		outside := f.lab.AddNode()
		pods := l.webPods(t)
		for _, p := range pods {
			if out, err := outside.Exec(ctx, "ip", "route", "replace", p.Status.IP+"/32", "via", byName[p.Node].IP.String()); err != nil {
				t.Fatalf("route %s via %s: %v %s", p.Status.IP, p.Node, err, out)
			}
		}
		for _, p := range pods {
			out, err := outside.Exec(ctx, "curl", "-s", "-m", "2", "http://"+p.Status.IP+":8080/hostname")
			if err == nil {
				t.Errorf("a host outside the cluster reached pod %s on %s at its IP %s: %s", p.Name, p.Node, p.Status.IP, out)
			}
		}
		// The node ports still answer it, also when the pod is on another
		// node (sent on from the first node's pod range).
		for _, n := range f.nodes {
			for i := range 6 {
				u := fmt.Sprintf("http://%s:%d/hostname", n.IP, l.nodePort)
				if out, err := outside.Exec(ctx, "curl", "-sf", "-m", "3", u); err != nil {
					t.Errorf("outside host, attempt %d: %s: %v %s", i+1, u, err, out)
				}
			}
		}
		// Every node reaches every pod by its IP, across nodes too (its
		// routes to other nodes' pods carry its bridge address as source).
		for _, n := range f.nodes {
			for _, p := range pods {
				if out, err := n.Exec(ctx, "curl", "-sf", "-m", "3", "http://"+p.Status.IP+":8080/hostname"); err != nil || strings.TrimSpace(string(out)) != p.Name {
					t.Errorf("node %s cannot reach pod %s on %s at %s: %v %s", n.Name, p.Name, p.Node, p.Status.IP, err, out)
				}
			}
		}
	})

	t.Run("session affinity client_ip keeps a client on one pod", func(t *testing.T) {
		ctx := context.Background()
		res, err := l.fetch(ctx, "n=60&url="+url.QueryEscape(webURL("web-sticky")))
		if err != nil {
			t.Fatal(err)
		}
		if res.OK != 60 || len(res.Answers) != 1 {
			t.Errorf("the caller pod was answered by %v (failures %v), want one pod 60 times", res.counts(), res.failureCounts())
		}
		// The node itself is another client: one pod for it too.
		stamps, err := nodeStream(ctx, l.nodeA, webURL(l.vip["web-sticky"]), 2*time.Second, 20*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if answers, failures := streamSummary(stamps); failures > 0 || len(answers) != 1 {
			t.Errorf("%s was answered by %v with %d failures, want one pod", l.nodeA.Name, answers, failures)
		}
		// Without affinity the same client is spread: the check above means something.
		res, err = l.fetch(ctx, "n=60&url="+url.QueryEscape(webURL("web")))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Answers) < 2 {
			t.Errorf("without affinity, 60 requests were answered by %v only", res.counts())
		}
	})

	t.Run("a UDP service answers from the pods", func(t *testing.T) {
		names := map[string]bool{}
		for _, p := range l.webPods(t) {
			names[p.Name] = true
		}
		for _, target := range []string{fmt.Sprintf("web:%d", svcUDPPort), fmt.Sprintf("%s:%d", l.vip["web"], svcUDPPort)} {
			res, err := l.fetch(context.Background(), "n=60&timeout=1s&udp="+url.QueryEscape(target))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("udp %s: %v, failures %v", target, res.counts(), res.failureCounts())
			if res.OK != 60 {
				t.Errorf("udp %s: %d of 60 datagrams answered; failures %v %q", target, res.OK, res.failureCounts(), res.Samples)
			}
			for a := range res.Answers {
				if !names[a] {
					t.Errorf("udp %s: answer %q is not a web pod", target, a)
				}
			}
			if len(res.Answers) < 2 {
				t.Errorf("udp %s: only %v answered 60 datagrams from fresh sockets; want them spread", target, res.counts())
			}
		}
	})

	t.Run("a service with no ready endpoint refuses connections at once", func(t *testing.T) {
		ctx := context.Background()
		res, err := l.fetch(ctx, "n=5&timeout=5s&url="+url.QueryEscape("http://nobody/"))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("from a pod: failures %v %q; slowest %.0f ms", res.failureCounts(), res.Samples, res.SlowestMS)
		if f := res.Failures["refused"]; f == nil || f.Count != 5 {
			t.Errorf("from a pod, 5 requests to nobody: failures %v %q, want connection refused 5 times", res.failureCounts(), res.Samples)
		}
		if res.SlowestMS > 1000 {
			t.Errorf("from a pod, the slowest refusal took %.0f ms, want under 1 s", res.SlowestMS)
		}
		start := time.Now()
		out, err := l.nodeA.Exec(ctx, "curl", "-s", "-m", "5", "http://"+l.vip["nobody"]+"/")
		took := time.Since(start)
		code := -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		t.Logf("from %s: curl exit %d after %s", l.nodeA.Name, code, took.Round(time.Millisecond))
		if code != 7 || took > time.Second { // 7: failed to connect
			t.Errorf("from %s: curl %s: exit %d (%v) after %s, want exit 7 (refused) in under 1 s: %s", l.nodeA.Name, l.vip["nobody"], code, err, took, out)
		}
	})

	t.Run("cluster DNS: services, SRV of a named port, pod names, unknown and outside names", func(t *testing.T) {
		ctx := context.Background()
		pods := l.webPods(t)
		checkA := func(name string, want ...string) {
			t.Helper()
			res, err := l.lookup(ctx, "A", name)
			if err != nil {
				t.Fatal(err)
			}
			if res.Error != "" || strings.Join(res.Addrs, ",") != strings.Join(want, ",") {
				t.Errorf("A %s = %v (error %q), want %v", name, res.Addrs, res.Error, want)
			}
		}
		checkA("web", l.vip["web"])
		checkA("nobody.default", l.vip["nobody"]) // a service resolves with or without endpoints
		checkA("web-np.default.svc.cluster.local", l.vip["web-np"])
		checkA(pods[0].Name+".default.pod.cluster.local", pods[0].Status.IP)

		for _, tc := range []struct {
			name string
			port int
		}{{"_http._tcp.web.default.svc.cluster.local", 80}, {"_echo._udp.web", svcUDPPort}} {
			res, err := l.lookup(ctx, "SRV", tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if res.Error != "" || len(res.SRV) != 1 || res.SRV[0].Port != tc.port || res.SRV[0].Target != "web.default.svc.cluster.local." {
				t.Errorf("SRV %s = %+v (error %q), want port %d at web.default.svc.cluster.local.", tc.name, res.SRV, res.Error, tc.port)
			}
		}

		// A name in the cluster domain that does not exist: NXDOMAIN, at once.
		res, err := l.lookup(ctx, "A", "no-such-service.default.svc.cluster.local.")
		if err != nil {
			t.Fatal(err)
		}
		if !res.NotFound || res.TookMS > 2000 {
			t.Errorf("A no-such-service.default.svc.cluster.local.: %+v, want not found within 2 s", res)
		}
		// Short: the search path ends with the bare name, forwarded out of
		// the cluster domain; whatever the answer, it comes at once.
		if res, err = l.lookup(ctx, "A", "no-such-service"); err != nil {
			t.Fatal(err)
		}
		t.Logf("A no-such-service: addrs %v, not found %v, %q after %.0f ms", res.Addrs, res.NotFound, res.Error, res.TookMS)
		if res.Error == "" || res.TookMS > 2000 {
			t.Errorf("A no-such-service: %+v, want an error within 2 s", res)
		}
		// The lab has no route out: the agent cannot forward, and must say so
		// rather than leave the pod waiting.
		res, err = l.lookup(ctx, "A", "example.com.")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("A example.com. (no way out of the lab): addrs %v, error %q after %.0f ms", res.Addrs, res.Error, res.TookMS)
		if res.TookMS > 12000 {
			t.Errorf("A example.com.: the pod waited %.0f ms; an outside name must be forwarded or refused, not hang", res.TookMS)
		}
	})

	t.Run("a pod failing its readiness probe leaves the rotation on every node", func(t *testing.T) {
		victim := l.webPods(t)[0]
		ctx := context.Background()
		defer func() {
			if err := l.setReady(ctx, victim, true); err != nil {
				t.Errorf("make %s ready again: %v", victim.Name, err)
			}
			l.waitWeb(t, 2*time.Minute)
		}()
		l.rotationTrial(t, victim, false, func() {
			if err := l.setReady(ctx, victim, false); err != nil {
				t.Fatal(err)
			}
		})
	})

	t.Run("a pod whose process is killed leaves the rotation on every node", func(t *testing.T) {
		pods := l.webPods(t)
		victim := pods[len(pods)-1]
		l.rotationTrial(t, victim, true, func() { l.killPod(t, victim) })
		l.waitWeb(t, 2*time.Minute)
	})

	t.Run("an agent restart under load fails no connection through the virtual IP and no lookup by name", func(t *testing.T) {
		for _, how := range []string{"SIGTERM", "SIGKILL"} {
			ctx := context.Background()
			const window = 14 * time.Second
			var wg sync.WaitGroup
			var vipRes, nameRes *fetchResult
			var vipErr, nameErr, nodeErr error
			var stamps []stamp
			wg.Add(3)
			go func() {
				defer wg.Done()
				vipRes, vipErr = l.fetch(ctx, fmt.Sprintf("duration=%s&interval=5ms&timeout=2s&url=%s", window, url.QueryEscape(webURL(l.vip["web"]))))
			}()
			go func() {
				defer wg.Done()
				// 4 s: the resolver's own budget (resolv.conf timeout:1
				// attempts:3) plus the request; a lookup sent as the agent
				// dies is answered by its second or third attempt.
				nameRes, nameErr = l.fetch(ctx, fmt.Sprintf("duration=%s&interval=20ms&timeout=4s&url=%s", window, url.QueryEscape(webURL("web"))))
			}()
			go func() {
				defer wg.Done()
				stamps, nodeErr = nodeStream(ctx, l.nodeA, webURL(l.vip["web"]), window, 20*time.Millisecond)
			}()
			time.Sleep(3 * time.Second) // traffic before the restart
			start := time.Now()
			if how == "SIGTERM" {
				l.nodeA.Stop()
			} else {
				l.nodeA.Kill()
			}
			f.start(l.nodeA)
			f.waitNodes(len(f.nodes))
			back := time.Since(start)
			wg.Wait()
			for _, err := range []error{vipErr, nameErr, nodeErr} {
				if err != nil {
					t.Fatal(err)
				}
			}
			answers, nodeFailures := streamSummary(stamps)
			// The slowest request shows a connection that lived only by a
			// retransmitted SYN (1 s): a packet was lost.
			t.Logf("%s restart of %s's agent (ready again after %s): pod via virtual IP %d requests, %d failed %v, slowest %.0f ms; node via virtual IP %d requests, %d failed; pod by name %d requests, %d failed %v %q, slowest %.0f ms",
				how, l.nodeA.Name, back.Round(time.Millisecond), vipRes.Requests, vipRes.Errors, vipRes.failureCounts(), vipRes.SlowestMS,
				len(stamps), nodeFailures, nameRes.Requests, nameRes.Errors, nameRes.failureCounts(), nameRes.Samples, nameRes.SlowestMS)
			// A killed agent's rules stay in the kernel, and its DNS port
			// sends no error while it is down (podnet's output rules), so
			// a pod's resolver asks again after 1 s (its resolv.conf):
			// neither way may lose a request.
			if vipRes.Requests < 100 || vipRes.Errors > 0 {
				t.Errorf("%s restart (stopped at %s): the caller pod's connections through the virtual IP: %d of %d failed: %v %q",
					how, start.Format("15:04:05.000"), vipRes.Errors, vipRes.Requests, vipRes.failureCounts(), vipRes.Samples)
			}
			if nodeFailures > 0 || len(answers) == 0 {
				t.Errorf("%s restart (stopped at %s): %s's own connections through the virtual IP: %d of %d failed: %v",
					how, start.Format("15:04:05.000"), l.nodeA.Name, nodeFailures, len(stamps), failedAt(stamps))
			}
			if nameRes.Requests < 50 || nameRes.Errors > 0 {
				t.Errorf("%s restart (stopped at %s): the caller pod's requests by name (asking the node's DNS each time): %d of %d failed: %v %q",
					how, start.Format("15:04:05.000"), nameRes.Errors, nameRes.Requests, nameRes.failureCounts(), nameRes.Samples)
			}
		}
	})

	t.Run("flotilla_service applied with terraform answers on its cluster_ip", func(t *testing.T) {
		var clusterIP string
		cfg := l.connLocals() + `

resource "flotilla_deployment" "tfweb" {
  api_connection = local.conn
  name           = "tfweb"
  replicas       = 2
  labels         = { app = "tfweb" }
  container {
    name  = "app"
    image = "flotilla.local/demo:v1"
    port {
      name           = "http"
      container_port = 8080
    }
  }
}

resource "flotilla_service" "tfweb" {
  api_connection = local.conn
  name           = "tfweb"
  selector       = flotilla_deployment.tfweb.labels
  port {
    name        = "http"
    port        = 8081
    target_port = "http"
  }
}

output "url" {
  value = "http://${flotilla_service.tfweb.cluster_ip}:8081/hostname"
}
`
		reached := func(s *terraform.State) error {
			u := s.RootModule().Outputs["url"].Value.(string)
			clusterIP = strings.TrimSuffix(strings.TrimPrefix(u, "http://"), ":8081/hostname")
			pods, err := livePods(context.Background(), l.via.client, "tfweb")
			if err != nil {
				return err
			}
			names := map[string]bool{}
			for _, p := range pods {
				names[p.Name] = true
			}
			// From a node other than the one terraform talked to.
			var last error
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				out, err := f.nodes[1].Exec(ctx, "curl", "-s", "-m", "2", u)
				cancel()
				if a := strings.TrimSpace(string(out)); err == nil && names[a] {
					t.Logf("%s answered by %s", u, a)
					return nil
				}
				last = fmt.Errorf("curl %s from %s: %v %q (tfweb pods %v)", u, f.nodes[1].Name, err, out, sortedKeys(names))
				time.Sleep(200 * time.Millisecond)
			}
			return last
		}
		tfTest(t, resource.TestCase{
			ProtoV6ProviderFactories: factories(),
			Steps: []resource.TestStep{{
				Config: cfg,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestMatchResourceAttr("flotilla_service.tfweb", "cluster_ip", ipv4RE),
					resource.TestCheckResourceAttr("flotilla_service.tfweb", "id", "default/tfweb"),
					reached,
				),
			}},
			CheckDestroy: func(*terraform.State) error {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if _, err := l.via.client.GetService(ctx, api.DefaultNamespace, "tfweb"); !api.IsNotFound(err) {
					return fmt.Errorf("service tfweb after destroy: %v", err)
				}
				return nil
			},
		})
		if clusterIP == "" {
			return
		}
		// Destroyed: its address leads nowhere any more, on every node.
		eventually(t, 20*time.Second, "tfweb's rules gone from "+f.nodes[1].Name, func(ctx context.Context) error {
			rules, err := iptablesSave(ctx, f.nodes[1])
			if err != nil {
				return err
			}
			if strings.Contains(rules, clusterIP+"/32") {
				return fmt.Errorf("%s still has rules for %s", f.nodes[1].Name, clusterIP)
			}
			return nil
		})
	})

	t.Run("flotilla_ingress applied with terraform routes by host on every node to pods on any node", func(t *testing.T) {
		cfg := l.connLocals() + `

resource "flotilla_deployment" "tfing" {
  api_connection = local.conn
  name           = "tfing"
  replicas       = 2
  labels         = { app = "tfing" }
  container {
    name  = "app"
    image = "flotilla.local/demo:v1"
    port {
      container_port = 8080
    }
  }
}

resource "flotilla_service" "tfing" {
  api_connection = local.conn
  name           = "tfing"
  selector       = flotilla_deployment.tfing.labels
  port {
    port        = 80
    target_port = "8080"
  }
}

resource "flotilla_ingress" "tfing" {
  api_connection = local.conn
  name           = "tfing"
  rule {
    host = "app.example.test"
    path {
      path    = "/"
      service = flotilla_service.tfing.name
      port    = 80
    }
  }
  rule {
    host = "gone.example.test"
    path {
      path    = "/"
      service = "missing"
      port    = 80
    }
  }
}
`
		// From the machine the lab hangs off, outside the fleet, to each
		// node's ingress port: every node routes to the pods, wherever
		// they run.
		client := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		defer client.CloseIdleConnections()
		get := func(node *fleetNode, host, path string) (int, string, error) {
			req, _ := http.NewRequest(http.MethodGet, "http://"+node.IP.String()+":8080"+path, nil)
			req.Host = host
			resp, err := client.Do(req)
			if err != nil {
				return 0, "", err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, strings.TrimSpace(string(b)), nil
		}
		reached := func(*terraform.State) error {
			pods, err := livePods(context.Background(), l.via.client, "tfing")
			if err != nil {
				return err
			}
			names := map[string]bool{}
			for _, p := range pods {
				names[p.Name] = true
			}
			for _, n := range f.nodes {
				// Until the node's proxy has the ingress in force: while
				// nginx reloads, a connection may still meet a worker of
				// the configuration before.
				var last error
				deadline := time.Now().Add(30 * time.Second)
				for {
					code, body, err := get(n, "app.example.test", "/hostname")
					if err == nil && code == http.StatusOK && names[body] {
						// A backend service that does not exist: 503 at
						// once, naming it.
						start := time.Now()
						code, body, err = get(n, "gone.example.test", "/")
						took := time.Since(start)
						if err == nil && code == http.StatusServiceUnavailable && strings.Contains(body, "missing") {
							if took > time.Second {
								return fmt.Errorf("%s, a host whose service does not exist: 503 after %s; want it at once", n.Name, took)
							}
							break
						}
						last = fmt.Errorf("%s, a host whose service does not exist: %d %q %v; want 503 naming the service", n.Name, code, body, err)
					} else {
						last = fmt.Errorf("GET http://%s:8080/hostname (Host app.example.test): %d %q %v (tfing pods %v)", n.IP, code, body, err, sortedKeys(names))
					}
					if time.Now().After(deadline) {
						return last
					}
					time.Sleep(200 * time.Millisecond)
				}
				// No rule for the host: 404.
				if code, body, err := get(n, "nobody.example.test", "/"); err != nil || code != http.StatusNotFound {
					return fmt.Errorf("%s, a host no rule names: %d %q %v; want 404", n.Name, code, body, err)
				}
			}
			metrics, err := l.nodeA.client.Metrics(context.Background())
			if err != nil {
				return err
			}
			if !regexp.MustCompile(`flotilla_ingress_request_duration_seconds_count\{ingress="default/tfing",status="200"\} [1-9]`).MatchString(metrics) {
				return fmt.Errorf("%s's /v1/metrics has no count of the ingress's 200s", l.nodeA.Name)
			}
			return nil
		}
		tfTest(t, resource.TestCase{
			ProtoV6ProviderFactories: factories(),
			Steps: []resource.TestStep{{
				Config: cfg,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("flotilla_ingress.tfing", "id", "default/tfing"),
					reached,
				),
			}},
		})
	})

	t.Run("flotilla-agent cleanup leaves no service rule, chain, route or ingress proxy on the node", func(t *testing.T) {
		n := f.nodes[1]
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		// Before: the node has what cleanup must remove, so the checks
		// below look in the right place.
		rules, err := iptablesSave(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		routes, err := n.Exec(ctx, "ip", "route")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(rules, "FLOTILLA-SVC") || !strings.Contains(rules, l.vip["web"]) {
			t.Fatalf("%s has no service rules before cleanup:\n%s", n.Name, rules)
		}
		if !strings.Contains(string(routes), "10.96.0.0/16") {
			t.Errorf("%s has no route for the service range before cleanup:\n%s", n.Name, routes)
		}
		if out, err := n.Exec(ctx, "ss", "-lnt"); err != nil || !strings.Contains(string(out), ":8080 ") {
			t.Errorf("%s's ingress proxy does not listen on 8080 before cleanup: %v\n%s", n.Name, err, out)
		}
		n.Stop()
		// The agent stopped; its ingress proxy serves on, as its rules do.
		if out, err := n.Exec(ctx, "ss", "-lnt"); err != nil || !strings.Contains(string(out), ":8080 ") {
			t.Errorf("%s's ingress proxy stopped with the agent: %v\n%s", n.Name, err, out)
		}
		args := append([]string{"--net=" + n.NetNSPath(), "--", env.agentBin, "cleanup", "--data-dir", n.dataDir}, n.agentArgs()...)
		if out, err := exec.CommandContext(ctx, "nsenter", args...).CombinedOutput(); err != nil {
			t.Fatalf("flotilla-agent cleanup on %s: %v\n%s", n.Name, err, out)
		}
		if rules, err = iptablesSave(ctx, n); err != nil {
			t.Fatal(err)
		}
		if left := flotillaLines(rules); len(left) > 0 {
			t.Errorf("after cleanup, %s's iptables still mention flotilla:\n%s", n.Name, strings.Join(left, "\n"))
		}
		if strings.Contains(rules, l.vip["web"]) {
			t.Errorf("after cleanup, %s's iptables still name web's virtual IP %s:\n%s", n.Name, l.vip["web"], rules)
		}
		if routes, err = n.Exec(ctx, "ip", "route"); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(routes), "10.96.") {
			t.Errorf("after cleanup, %s still routes the service range:\n%s", n.Name, routes)
		}
		recent, _ := n.Exec(ctx, "ls", "/proc/net/xt_recent")
		if strings.Contains(strings.ToLower(string(recent)), "flotilla") {
			t.Errorf("after cleanup, %s still has affinity lists: %s", n.Name, recent)
		}
		if out, err := n.Exec(ctx, "ss", "-lnu"); err == nil && strings.Contains(string(out), ":53 ") {
			t.Errorf("after cleanup, something still listens on UDP port 53 on %s:\n%s", n.Name, out)
		}
		if out, err := n.Exec(ctx, "ss", "-lntp"); err == nil && (strings.Contains(string(out), ":8080 ") || strings.Contains(string(out), "nginx")) {
			t.Errorf("after cleanup, the ingress proxy still listens on %s:\n%s", n.Name, out)
		}
		t.Logf("after cleanup, %s routes:\n%s", n.Name, routes)
	})
}

// ipv4RE matches a dotted IPv4 address.
var ipv4RE = regexp.MustCompile(`^\d+\.\d+\.\d+\.\d+$`)

// rotationTrial streams requests to web through its virtual IP from the
// caller pod and from every node while act takes victim out (its process
// killed, or its readiness failed), and checks how long each client was
// still sent to it: the last answer it gave (readiness: it still serves)
// or the last failed request (killed: nothing listens) after act, all
// within outOfRotationWithin. A killed pod's container restarts and may
// rightly answer again, so for it only failures count.
func (l *svcLab) rotationTrial(t *testing.T, victim api.Pod, killed bool, act func()) {
	t.Helper()
	const window = 10 * time.Second
	ctx := context.Background()
	webURL := "http://" + l.vip["web"] + "/hostname"
	var wg sync.WaitGroup
	var res *fetchResult
	var fetchErr error
	streams := make([][]stamp, len(l.f.nodes))
	streamErrs := make([]error, len(l.f.nodes))
	wg.Add(1)
	go func() {
		defer wg.Done()
		// 2 s: a SYN the loaded machine drops is sent again after 1 s; a
		// user sees that as a slow request, not a failed one (the slowest
		// is logged).
		res, fetchErr = l.fetch(ctx, fmt.Sprintf("duration=%s&interval=10ms&timeout=2s&url=%s", window, url.QueryEscape(webURL)))
	}()
	for i, n := range l.f.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			streams[i], streamErrs[i] = nodeStream(ctx, n, webURL, window, 50*time.Millisecond)
		}()
	}
	time.Sleep(2 * time.Second) // the victim answers before
	t0 := time.Now()
	act()
	wg.Wait()
	if fetchErr != nil {
		t.Fatal(fetchErr)
	}
	for _, err := range streamErrs {
		if err != nil {
			t.Fatal(err)
		}
	}
	how := "readiness failed"
	if killed {
		how = "process killed"
	}
	check := func(who string, before time.Time, lastVictim, lastFail time.Time, counts map[string]int, failures int, detail string) {
		if before.IsZero() {
			// Likely only for a node's slow curl loop on a busy machine; the
			// pod's loop makes hundreds of requests before.
			t.Logf("%s: %s answered no request before it was taken out; only later requests are checked", who, victim.Name)
			if strings.HasPrefix(who, "pod ") {
				t.Errorf("%s: the caller pod was never answered by %s before it was taken out; the trial proves nothing", who, victim.Name)
			}
		}
		gone := since(lastVictim, t0)
		if killed {
			gone = since(lastFail, t0)
		}
		t.Logf("%s (%s): %s out of rotation after %s; answers %v, %d failed", how, who, victim.Name, gone.Round(time.Millisecond), counts, failures)
		if gone > outOfRotationWithin {
			t.Errorf("%s: %s was still sent requests %s after its %s, want under %s", who, victim.Name, gone.Round(time.Millisecond), how, outOfRotationWithin)
		}
		if !killed && failures > 0 {
			t.Errorf("%s: %d requests failed while a pod only became unready (it was taken out at %s)%s", who, failures, t0.Format("15:04:05.000"), detail)
		}
	}
	var before time.Time
	if a := res.Answers[victim.Name]; a != nil && a.First.Before(t0) {
		before = a.First
	}
	var lastVictim time.Time
	if a := res.Answers[victim.Name]; a != nil {
		lastVictim = a.Last
	}
	t.Logf("pod %s on %s: %d requests, the slowest %.0f ms", l.caller.Name, l.caller.Node, res.Requests, res.SlowestMS)
	check("pod "+l.caller.Name+" on "+l.caller.Node, before, lastVictim, res.lastFailure(), res.counts(), res.Errors,
		fmt.Sprintf(": %v, e.g. %q, the last at %s", res.failureCounts(), res.Samples, res.lastFailure().Format("15:04:05.000")))
	for i, n := range l.f.nodes {
		var first time.Time
		for _, s := range streams[i] {
			if s.ok && s.answer == victim.Name && s.at.Before(t0) {
				first = s.at
				break
			}
		}
		counts, failures := streamSummary(streams[i])
		check("node "+n.Name, first, lastAnswerFrom(streams[i], victim.Name), lastStreamFailure(streams[i]), counts, failures, "")
	}
}

// connLocals is HCL that defines local.conn, the api_connection of the
// lab's client node.
func (l *svcLab) connLocals() string {
	return fmt.Sprintf(`
locals {
  conn = {
    endpoint    = %q
    token       = %q
    ca_cert_pem = %q
  }
}
`, l.nodeA.endpoint(), l.f.apiToken, string(l.f.caPEM))
}
