package acceptance

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/api"
)

// TestAccSelfHealing checks issue 9's repair promises in a lab of 3
// servers (cordoned, so pods land on the clients only) and 3 clients:
// replicas spread 2/2/2; a client cut off, killed with SIGKILL or frozen
// with SIGSTOP has its pods running and ready on the others; when it
// returns it stops what was replaced while it was away, so no deployment
// runs more pods than replicas; a cut-off client stops the pods of a
// self-fencing deployment before their replacements start, and keeps the
// others.
func TestAccSelfHealing(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 3, 3)
	via := f.nodes[0]
	clients := f.nodes[3:]
	for _, s := range f.nodes[:3] {
		writeRetrying(t, "cordon "+s.Name, func(ctx context.Context) error {
			_, err := via.client.SetNodeSchedule(ctx, s.Name, api.NodeSchedule{Unschedulable: true})
			return err
		})
	}
	heal := demoDeployment("heal", 6)
	fenced := demoDeployment("fenced", 3)
	fenced.SelfFencing = true
	for _, d := range []*api.Deployment{heal, fenced} {
		writeRetrying(t, "create "+d.Name, func(ctx context.Context) error {
			_, err := via.client.CreateDeployment(ctx, d)
			if api.IsConflict(err) {
				return nil
			}
			return err
		})
	}

	t.Run("6 replicas are spread 2/2/2 over the schedulable nodes", func(t *testing.T) {
		eventually(t, 90*time.Second, "heal and fenced ready", func(ctx context.Context) error {
			if err := readyElsewhere(ctx, via, "heal", 6, ""); err != nil {
				return err
			}
			return readyElsewhere(ctx, via, "fenced", 3, "")
		})
		ctx := context.Background()
		for _, c := range clients {
			for dep, want := range map[string]int{"heal": 2, "fenced": 1} {
				pods, err := podsOn(ctx, via, c.Name, dep)
				if err != nil {
					t.Fatal(err)
				}
				if len(pods) != want {
					t.Errorf("%s has %d pods of %s, want %d", c.Name, len(pods), dep, want)
				}
			}
		}
	})

	// A watcher counts, through the whole test, any moment a deployment
	// has more live (not stopping) pods than replicas.
	burst := []string{"burst-a", "burst-b", "burst-c"}
	over := watchOverReplicas(t, via, map[string]int{"heal": 6, "fenced": 3, burst[0]: 3, burst[1]: 3, burst[2]: 3})

	t.Run("a cut-off node's self-fencing pods stop before their replacements start; its other pods keep running", func(t *testing.T) {
		victim := clients[2]
		ctx := context.Background()
		eventually(t, 90*time.Second, "fenced and heal ready", func(ctx context.Context) error {
			if err := readyElsewhere(ctx, via, "heal", 6, ""); err != nil {
				return err
			}
			return readyElsewhere(ctx, via, "fenced", 3, "")
		})
		fencedIPs, err := podIPsOn(ctx, via, victim.Name, "fenced")
		if err != nil || len(fencedIPs) == 0 {
			t.Fatalf("no fenced pod on %s to cut off (%v)", victim.Name, err)
		}
		healIPs, err := podIPsOn(ctx, via, victim.Name, "heal")
		if err != nil || len(healIPs) == 0 {
			t.Fatalf("no heal pod on %s (%v)", victim.Name, err)
		}
		start := time.Now()
		victim.Cut()
		healed := false
		defer func() {
			if !healed {
				victim.Heal()
			}
		}()
		// From inside the cut-off node (its pods are on its own bridge):
		// when did the fenced pods stop answering?
		stopped := make(chan time.Duration, 1)
		go func() {
			for time.Since(start) < 2*time.Minute {
				if !anyAnswers(victim, fencedIPs) {
					stopped <- time.Since(start)
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			stopped <- -1
		}()
		// When did the replacements run elsewhere?
		var replaced time.Duration
		eventually(t, 2*time.Minute, "fenced pods running elsewhere", func(ctx context.Context) error {
			if err := runningElsewhere(ctx, via, "fenced", 3, victim.Name); err != nil {
				return err
			}
			replaced = time.Since(start)
			return nil
		})
		eventually(t, time.Minute, "heal ready elsewhere", func(ctx context.Context) error {
			return readyElsewhere(ctx, via, "heal", 6, victim.Name)
		})
		ready := time.Since(start)
		fencedAt := <-stopped
		t.Logf("cut: fenced pods stopped after %s; replacements running after %s; all ready elsewhere after %s", fencedAt, replaced, ready)
		if fencedAt < 0 || fencedAt >= replaced {
			t.Errorf("the cut-off node's self-fencing pods stopped answering after %s, but their replacements ran after %s: a replica ran twice", fencedAt, replaced)
		}
		for _, ip := range healIPs {
			if !podAnswers(victim, ip) {
				t.Errorf("pod %s of heal (no self-fencing) on the cut-off node stopped; it should run on while the node is cut off", ip)
			}
		}
		victim.Heal()
		healed = true
		checkReturned(t, via, victim, append(fencedIPs, healIPs...))
	})

	t.Run("a node killed with SIGKILL has its pods replaced; back, it stops them", func(t *testing.T) {
		victim := clients[0]
		ips, err := podIPsOn(context.Background(), via, victim.Name, "")
		if err != nil || len(ips) == 0 {
			t.Fatalf("no pod on %s (%v)", victim.Name, err)
		}
		start := time.Now()
		victim.Kill()
		defer func() {
			if !victim.Running() {
				f.start(victim)
			}
		}()
		waitReplaced(t, via, victim, start, "kill -9")
		f.start(victim)
		checkReturned(t, via, victim, ips)
	})

	t.Run("a node frozen with SIGSTOP has its pods replaced; thawed, it stops them", func(t *testing.T) {
		victim := clients[1]
		ips, err := podIPsOn(context.Background(), via, victim.Name, "")
		if err != nil || len(ips) == 0 {
			t.Fatalf("no pod on %s (%v)", victim.Name, err)
		}
		start := time.Now()
		victim.Freeze()
		thawed := false
		defer func() {
			if !thawed {
				victim.Thaw()
			}
		}()
		waitReplaced(t, via, victim, start, "SIGSTOP")
		victim.Thaw()
		thawed = true
		checkReturned(t, via, victim, ips)
	})

	t.Run("drain empties a node while the deployment keeps replicas - 1 ready", func(t *testing.T) {
		eventually(t, 90*time.Second, "heal ready", func(ctx context.Context) error {
			return readyElsewhere(ctx, via, "heal", 6, "")
		})
		victim := clients[0]
		ctx := context.Background()
		if pods, _ := podsOn(ctx, via, victim.Name, "heal"); len(pods) == 0 {
			t.Fatalf("no heal pod on %s to drain", victim.Name)
		}
		writeRetrying(t, "drain "+victim.Name, func(ctx context.Context) error {
			_, err := via.client.SetNodeSchedule(ctx, victim.Name, api.NodeSchedule{Draining: true})
			return err
		})
		minReady := 6
		eventually(t, 2*time.Minute, victim.Name+" drained", func(ctx context.Context) error {
			pods, err := podsOn(ctx, via, "", "heal")
			if err != nil {
				return err
			}
			ready, onVictim := 0, 0
			for _, p := range pods {
				if !p.Stop && p.Status.Ready {
					ready++
				}
				if p.Node == victim.Name {
					onVictim++
				}
			}
			minReady = min(minReady, ready)
			if onVictim > 0 {
				return fmt.Errorf("%d heal pods left on %s", onVictim, victim.Name)
			}
			return readyElsewhere(ctx, via, "heal", 6, victim.Name)
		})
		if minReady < 5 {
			t.Errorf("during the drain heal had %d ready pods; it must keep replicas - 1 = 5", minReady)
		}
		writeRetrying(t, "uncordon "+victim.Name, func(ctx context.Context) error {
			_, err := via.client.SetNodeSchedule(ctx, victim.Name, api.NodeSchedule{})
			return err
		})
	})

	t.Run("a leader failover under placement load creates no duplicate pod", func(t *testing.T) {
		for _, name := range burst {
			d := demoDeployment(name, 3)
			writeRetrying(t, "create "+name, func(ctx context.Context) error {
				_, err := via.client.CreateDeployment(ctx, d)
				if api.IsConflict(err) {
					return nil
				}
				return err
			})
		}
		l, err := f.leader(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		l.Kill()
		f.start(l)
		eventually(t, 2*time.Minute, "burst deployments ready", func(ctx context.Context) error {
			for _, name := range burst {
				if err := readyElsewhere(ctx, via, name, 3, ""); err != nil {
					return err
				}
			}
			return nil
		})
	})

	if n := over(); len(n) > 0 {
		t.Errorf("deployments ran more live pods than replicas: %s", strings.Join(n, "; "))
	}
}

// waitReplaced waits until heal and fenced are fully ready on nodes other
// than victim, and logs how long it took from start.
func waitReplaced(t *testing.T, via, victim *fleetNode, start time.Time, how string) {
	t.Helper()
	eventually(t, 2*time.Minute, "pods ready elsewhere", func(ctx context.Context) error {
		if err := readyElsewhere(ctx, via, "heal", 6, victim.Name); err != nil {
			return err
		}
		return readyElsewhere(ctx, via, "fenced", 3, victim.Name)
	})
	t.Logf("%s: deployments ready elsewhere after %s", how, time.Since(start))
}

// checkReturned checks that a node back in the fleet stops its replaced
// pods: they stop answering, and leave the state once torn down.
func checkReturned(t *testing.T, via, victim *fleetNode, ips []string) {
	t.Helper()
	back := time.Now()
	eventually(t, 90*time.Second, victim.Name+" stops the pods replaced while it was away", func(ctx context.Context) error {
		if anyAnswers(victim, ips) {
			return fmt.Errorf("a replaced pod still answers on %s", victim.Name)
		}
		pods, err := podsOn(ctx, via, victim.Name, "")
		if err != nil {
			return err
		}
		if len(pods) > 0 {
			return fmt.Errorf("%d pods still on %s, e.g. %s %s", len(pods), victim.Name, pods[0].ID(), podState(pods[0]))
		}
		return nil
	})
	t.Logf("%s back: its replaced pods gone after %s", victim.Name, time.Since(back))
}

// readyElsewhere checks that dep has exactly want live pods, all running
// and ready, none on node not ("" for any node).
func readyElsewhere(ctx context.Context, via *fleetNode, dep string, want int, not string) error {
	pods, err := podsOn(ctx, via, "", dep)
	if err != nil {
		return err
	}
	live := 0
	for _, p := range pods {
		if p.Stop {
			continue
		}
		live++
		if p.Node == not {
			return fmt.Errorf("pod %s of %s still live on %s", p.ID(), dep, not)
		}
		if p.Status.Phase != api.PodRunning || !p.Status.Ready {
			return fmt.Errorf("pod %s of %s on %s: %s", p.ID(), dep, p.Node, podState(p))
		}
	}
	if live != want {
		return fmt.Errorf("%s has %d live pods, want %d", dep, live, want)
	}
	return nil
}

// runningElsewhere checks that dep has want live pods running on nodes
// other than not (ready or not yet).
func runningElsewhere(ctx context.Context, via *fleetNode, dep string, want int, not string) error {
	pods, err := podsOn(ctx, via, "", dep)
	if err != nil {
		return err
	}
	running := 0
	for _, p := range pods {
		if !p.Stop && p.Node != not && p.Status.Phase == api.PodRunning {
			running++
		}
	}
	if running < want {
		return fmt.Errorf("%d of %s's pods run off %s, want %d", running, dep, not, want)
	}
	return nil
}

// podIPsOn returns the IPs of the live pods of dep ("" any) on node.
func podIPsOn(ctx context.Context, via *fleetNode, node, dep string) ([]string, error) {
	pods, err := podsOn(ctx, via, node, dep)
	if err != nil {
		return nil, err
	}
	var ips []string
	for _, p := range pods {
		if !p.Stop && p.Status.IP != "" {
			ips = append(ips, p.Status.IP)
		}
	}
	return ips, nil
}

// podAnswers reports whether the demo app answers at ip from inside n. A
// pod whose network is gone does not refuse, it is silent: the connect
// timeout is what bounds how late a stop is seen.
func podAnswers(n *fleetNode, ip string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	out, err := n.Exec(ctx, "curl", "-s", "--connect-timeout", "0.3", "-m", "1", "http://"+ip+":8080/")
	return err == nil && strings.Contains(string(out), "version=")
}

// anyAnswers reports whether any of ips answers from inside n, asking them
// all at once.
func anyAnswers(n *fleetNode, ips []string) bool {
	answers := make(chan bool, len(ips))
	for _, ip := range ips {
		go func() { answers <- podAnswers(n, ip) }()
	}
	answered := false
	for range ips {
		answered = <-answers || answered
	}
	return answered
}

// watchOverReplicas polls the deployments' pods every 200 ms until the
// test ends and returns a func listing every time one had more live pods
// than its replicas.
func watchOverReplicas(t *testing.T, via *fleetNode, replicas map[string]int) func() []string {
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var seen []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			for dep, want := range replicas {
				pods, err := podsOn(ctx, via, "", dep)
				if err != nil {
					continue
				}
				var live []string
				for _, p := range pods {
					if !p.Stop {
						live = append(live, p.Name+"@"+p.Node)
					}
				}
				if len(live) > want {
					slices.Sort(live)
					mu.Lock()
					seen = append(seen, fmt.Sprintf("%s at %s: %d live pods (%s)", dep, time.Now().Format("15:04:05.000"), len(live), strings.Join(live, ", ")))
					mu.Unlock()
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}
