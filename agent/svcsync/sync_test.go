package svcsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/flotilla-io/flotilla/agent/clusterdns"
	"github.com/flotilla-io/flotilla/agent/svcproxy"
	"github.com/flotilla-io/flotilla/api"
)

// fakeDNS records the views it is given.
type fakeDNS struct {
	mu      sync.Mutex
	updates int
	svcs    []clusterdns.Service
	pods    []clusterdns.Pod
}

func (d *fakeDNS) Update(svcs []clusterdns.Service, pods []clusterdns.Pod) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.updates++
	d.svcs, d.pods = svcs, pods
	return len(svcs) + len(pods), nil
}

func (d *fakeDNS) view() (int, []clusterdns.Service, []clusterdns.Pod) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.updates, d.svcs, d.pods
}

// harness runs a Syncer over a FakeSource into a real svcproxy.Syncer on a
// FakeApplier and a fakeDNS. Everything runs in a synctest bubble: time
// moves only when every goroutine is blocked.
type harness struct {
	t      *testing.T
	src    *FakeSource
	app    *svcproxy.FakeApplier
	dns    *fakeDNS
	s      *Syncer
	cancel context.CancelFunc
	done   chan struct{}
}

func newHarness(t *testing.T, mutate func(*Config)) *harness {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	pcfg := svcproxy.DefaultConfig()
	pcfg.ClusterCIDR, pcfg.NodePodCIDR, pcfg.Logger = netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.244.0.0/24"), log
	app := svcproxy.NewFakeApplier()
	proxy, err := svcproxy.NewSyncer(pcfg, app)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, src: NewFakeSource(), app: app, dns: &fakeDNS{}, done: make(chan struct{})}
	cfg := DefaultConfig()
	cfg.NodeName, cfg.Source, cfg.Proxy, cfg.DNS, cfg.Logger = "n1", h.src, proxy, h.dns, log
	if mutate != nil {
		mutate(&cfg)
	}
	if h.s, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { defer close(h.done); h.s.Run(ctx) }()
	h.t.Cleanup(h.stop)
}

func (h *harness) stop() {
	if h.cancel != nil {
		h.cancel()
		<-h.done
		h.cancel = nil
	}
}

// nat returns the fake's nat table as iptables-save prints it.
func (h *harness) nat() string {
	out, err := h.app.Save(context.Background(), "nat")
	if err != nil {
		h.t.Fatal(err)
	}
	return string(out)
}

func webService() api.Service {
	return api.Service{Namespace: "default", Name: "web", ClusterIP: "10.96.0.10", Type: api.ServiceClusterIP,
		Ports: []api.ServicePort{{Name: "http", Port: 80, TargetPort: "http"}}}
}

func webEndpoints(ports ...int) api.Endpoints {
	e := api.Endpoints{Namespace: "default", Name: "web"}
	for i, p := range ports {
		e.Addresses = append(e.Addresses, api.EndpointAddress{Pod: fmt.Sprintf("web-%d", i), Node: "n1",
			IP: fmt.Sprintf("10.244.0.%d", 10+i), Ready: true, Ports: []api.EndpointPort{{Name: "http", Protocol: "tcp", Port: p}}})
	}
	return e
}

func TestRunSyncsServicesAndRemovesThem(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		h.src.SetService(webService())
		h.src.SetEndpoints(webEndpoints(8080, 9090))
		h.start()
		synctest.Wait()
		nat := h.nat()
		for _, want := range []string{"-d 10.96.0.10/32 -p tcp", "--to-destination 10.244.0.10:8080", "--to-destination 10.244.0.11:9090"} {
			if !strings.Contains(nat, want) {
				t.Errorf("nat table lacks %q:\n%s", want, nat)
			}
		}
		n, svcs, pods := h.dns.view()
		if n != 1 || len(svcs) != 1 || len(pods) != 2 {
			t.Errorf("DNS: %d updates, services %+v, pods %+v; want 1 update, web and its two pods", n, svcs, pods)
		}

		// An endpoint that is no longer ready leaves the rotation.
		e := webEndpoints(8080, 9090)
		e.Addresses[1].Ready = false
		h.src.SetEndpoints(e)
		time.Sleep(time.Second)
		synctest.Wait()
		if nat := h.nat(); strings.Contains(nat, "10.244.0.11:9090") || !strings.Contains(nat, "10.244.0.10:8080") {
			t.Errorf("after web-1 became not ready:\n%s", nat)
		}

		h.src.DeleteService("default", "web")
		time.Sleep(time.Second)
		synctest.Wait()
		if nat := h.nat(); strings.Contains(nat, "10.96.0.10") || strings.Contains(nat, "--to-destination") {
			t.Errorf("the deleted service's rules are still there:\n%s", nat)
		}
		if _, svcs, _ := h.dns.view(); len(svcs) != 0 {
			t.Errorf("DNS still has %+v", svcs)
		}
		if st := h.s.Stats(); st.Syncs != 3 || st.Failures != 0 || st.LastError != "" || st.ServicePorts != 0 {
			t.Errorf("stats %+v, want 3 syncs without failure and no service ports left", st)
		}
	})
}

func TestRunCoalescesBursts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		h.src.SetService(webService())
		h.start()
		synctest.Wait()
		first := h.s.Stats().Syncs
		start := time.Now()
		// A burst of endpoint changes, 1 ms apart, within one MinInterval.
		for i := range 20 {
			h.src.SetEndpoints(webEndpoints(8000 + i))
			time.Sleep(time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
		synctest.Wait()
		st := h.s.Stats()
		if got := st.Syncs - first; got < 1 || got > 2 {
			t.Errorf("20 changes in %v took %d syncs; want them coalesced into at most 2", time.Since(start), got)
		}
		if nat := h.nat(); !strings.Contains(nat, "10.244.0.10:8019") || strings.Contains(nat, "10.244.0.10:8018") {
			t.Errorf("the last change is not the one in force:\n%s", nat)
		}

		// Writes about anything else wake the loop but sync nothing.
		reads := h.src.Reads()
		for range 10 {
			h.src.Touch()
			time.Sleep(time.Second)
		}
		synctest.Wait()
		if h.src.Reads() != reads || h.s.Stats().Syncs != st.Syncs {
			t.Errorf("unrelated changes read the services %d times and synced %d times; want none", h.src.Reads()-reads, h.s.Stats().Syncs-st.Syncs)
		}
	})
}

func TestRunLocalPodsUpdateDNSOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		h.src.SetService(webService())
		h.start()
		synctest.Wait()
		restores := len(h.app.Restores())
		h.src.SetPod(api.Pod{Namespace: "default", Name: "solo", Node: "n1", Status: api.PodStatus{IP: "10.244.0.30"}})
		h.src.SetPod(api.Pod{Namespace: "default", Name: "elsewhere", Node: "n2", Status: api.PodStatus{IP: "10.244.1.30"}})
		time.Sleep(time.Second)
		synctest.Wait()
		if got := len(h.app.Restores()); got != restores {
			t.Errorf("a pod change ran %d iptables restores; want none", got-restores)
		}
		_, _, pods := h.dns.view()
		want := []clusterdns.Pod{{Namespace: "default", Name: "solo", IP: addr("10.244.0.30")}}
		if fmt.Sprint(pods) != fmt.Sprint(want) {
			t.Errorf("DNS pods %+v, want %+v (this node's pod only)", pods, want)
		}
	})
}

func TestRunWaitsForReady(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ready := make(chan struct{})
		h := newHarness(t, func(c *Config) {
			c.Ready = func(ctx context.Context) {
				select {
				case <-ready:
				case <-ctx.Done():
				}
			}
		})
		h.start()
		time.Sleep(time.Minute)
		synctest.Wait()
		if st := h.s.Stats(); st.Syncs != 0 || len(h.app.Restores()) != 0 {
			t.Fatalf("synced %d times (%d restores) before the view was ready", st.Syncs, len(h.app.Restores()))
		}
		h.src.SetService(webService())
		close(ready)
		synctest.Wait()
		if !strings.Contains(h.nat(), "10.96.0.10") {
			t.Errorf("no rules once ready:\n%s", h.nat())
		}
	})
}

func TestRunRetriesWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		var (
			mu    sync.Mutex
			fails = 3
			at    []time.Time
		)
		h.app.FailRestore = func([]byte) error {
			mu.Lock()
			defer mu.Unlock()
			at = append(at, time.Now())
			if fails > 0 {
				fails--
				return errors.New("iptables-restore: resource temporarily unavailable")
			}
			return nil
		}
		h.src.SetService(webService())
		start := time.Now()
		h.start()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		st := h.s.Stats()
		if st.Failures != 3 || st.LastError != "" || st.LastSuccess.IsZero() {
			t.Errorf("stats %+v; want 3 failures, then success", st)
		}
		if !strings.Contains(h.nat(), "10.96.0.10") {
			t.Errorf("no rules after the retries:\n%s", h.nat())
		}
		// Backoff: 200 ms, 400 ms, 800 ms after each failure.
		mu.Lock()
		defer mu.Unlock()
		var offsets []time.Duration
		for _, a := range at[:4] {
			offsets = append(offsets, a.Sub(start))
		}
		want := []time.Duration{0, 200 * time.Millisecond, 600 * time.Millisecond, 1400 * time.Millisecond}
		if fmt.Sprint(offsets) != fmt.Sprint(want) {
			t.Errorf("restores tried at %v, want %v", offsets, want)
		}
	})
}

func TestRunRepairsFlushedChains(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, func(c *Config) { c.Repair = time.Minute })
		h.src.SetService(webService())
		h.src.SetEndpoints(webEndpoints(8080))
		h.start()
		synctest.Wait()
		// An administrator flushes the dispatch chain behind the agent's back.
		if err := h.app.Restore(context.Background(), []byte("*nat\n:FLOTILLA-SVC-SERVICES - [0:0]\nCOMMIT\n")); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(h.nat(), "-A FLOTILLA-SVC-SERVICES") {
			t.Fatal("flush did not take")
		}
		time.Sleep(time.Minute + time.Second)
		synctest.Wait()
		if !strings.Contains(h.nat(), "-A FLOTILLA-SVC-SERVICES -d 0.0.0.10/0.0.0.63") {
			t.Errorf("the flushed chain was not repaired:\n%s", h.nat())
		}
	})
}

func TestNewRefusesIncompleteConfig(t *testing.T) {
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "no node name") || !strings.Contains(err.Error(), "neither a proxy nor a DNS") {
		t.Errorf("New(Config{}) = %v", err)
	}
}
