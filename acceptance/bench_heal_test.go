package acceptance

// BenchmarkFleetSelfHealing measures issue 9's repair figures on a lab
// fleet of 3 servers and 2 clients, every node schedulable: for a client
// killed with SIGKILL, frozen with SIGSTOP and cut off (its link down),
// the time until its deployments are fully ready on the other nodes
// (median of BENCH_HEAL_TIMES, 5 by default), how long after it returns
// the pods replaced meanwhile stop on it, and, for the cut, how the
// self-fencing deployment's pods on it stopped relative to their
// replacements starting (negative: stopped first, no replica ran twice).
// Then 300 pods over the 5 nodes: one `terraform apply` until all are
// ready. Nomad 1.9's figure for the same repair on this kind of machine
// (kill -9, its defaults) was 22 s; it is in the issue, not re-measured
// here (Nomad is not packaged for Debian).

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/api"
)

func BenchmarkFleetSelfHealing(b *testing.B) {
	needAcc(b)
	bf := startBenchFleet(b, 3, 2)
	via := bf.nodes[0]
	var clients []*fleetNode
	for _, n := range bf.nodes {
		if !n.server {
			clients = append(clients, n)
		}
	}
	heal := demoDeployment("heal", 10)
	fenced := demoDeployment("fenced", 5)
	fenced.SelfFencing = true
	ctx := context.Background()
	for _, d := range []*api.Deployment{heal, fenced} {
		if _, err := via.client.CreateDeployment(ctx, d); err != nil {
			b.Fatal(err)
		}
	}
	allReady := func(not string) func(context.Context) error {
		return func(ctx context.Context) error {
			if err := readyElsewhere(ctx, via, "heal", 10, not); err != nil {
				return err
			}
			return readyElsewhere(ctx, via, "fenced", 5, not)
		}
	}
	waitUntil(b, 3*time.Minute, "deployments ready", allReady(""))

	times := envInt("BENCH_HEAL_TIMES", 5)
	type figures struct{ repair, backStop, fenceLead []float64 }
	results := map[string]*figures{}
	for _, how := range []string{"kill -9", "SIGSTOP", "link cut"} {
		fig := &figures{}
		results[how] = fig
		for i := range times {
			victim := clients[i%len(clients)]
			// Pods return to the victim only as others need room, so move
			// a share back: drain the other client, then uncordon it.
			waitUntil(b, 3*time.Minute, "deployments ready", allReady(""))
			ips, err := podIPsOn(ctx, via, victim.Name, "")
			if err != nil || len(ips) == 0 {
				rebalance(b, via, clients, victim)
				if ips, err = podIPsOn(ctx, via, victim.Name, ""); err != nil || len(ips) == 0 {
					b.Fatalf("no pod on %s to take away (%v)", victim.Name, err)
				}
			}
			fencedIPs, _ := podIPsOn(ctx, via, victim.Name, "fenced")
			start := time.Now()
			var fencedStopped chan time.Duration
			switch how {
			case "kill -9":
				victim.Kill()
			case "SIGSTOP":
				victim.Freeze()
			case "link cut":
				victim.Cut()
				fencedStopped = make(chan time.Duration, 1)
				go func() {
					for time.Since(start) < 2*time.Minute {
						if !anyAnswers(victim, fencedIPs) {
							fencedStopped <- time.Since(start)
							return
						}
						time.Sleep(100 * time.Millisecond)
					}
					fencedStopped <- -1
				}()
			}
			var replacedAt time.Duration
			waitUntil(b, 2*time.Minute, "fenced running elsewhere", func(ctx context.Context) error {
				if err := runningElsewhere(ctx, via, "fenced", 5, victim.Name); err != nil {
					return err
				}
				replacedAt = time.Since(start)
				return nil
			})
			waitUntil(b, 2*time.Minute, "ready elsewhere", allReady(victim.Name))
			repair := time.Since(start)
			fig.repair = append(fig.repair, repair.Seconds())
			lead := ""
			if fencedStopped != nil {
				if at := <-fencedStopped; at >= 0 {
					fig.fenceLead = append(fig.fenceLead, (at - replacedAt).Seconds())
					lead = fmt.Sprintf("; self-fencing pods stopped %.1f s after the cut, replacements ran %.1f s after it", at.Seconds(), replacedAt.Seconds())
				}
			}
			back := time.Now()
			switch how {
			case "kill -9":
				bf.do(b, func(*testing.T) { bf.start(victim) })
			case "SIGSTOP":
				victim.Thaw()
			case "link cut":
				victim.Heal()
			}
			waitUntil(b, 2*time.Minute, "replaced pods stopped on "+victim.Name, func(ctx context.Context) error {
				if anyAnswers(victim, ips) {
					return fmt.Errorf("a replaced pod still answers on %s", victim.Name)
				}
				return nil
			})
			fig.backStop = append(fig.backStop, time.Since(back).Seconds())
			b.Logf("%s of %s: ready elsewhere after %.1f s; back, its replaced pods stopped after %.1f s%s", how, victim.Name, repair.Seconds(), time.Since(back).Seconds(), lead)
			waitUntil(b, 2*time.Minute, victim.Name+" empty", func(ctx context.Context) error {
				pods, err := podsOn(ctx, via, victim.Name, "")
				if err != nil || len(pods) > 0 {
					return fmt.Errorf("%d pods on %s (%v)", len(pods), victim.Name, err)
				}
				return nodeStatus(ctx, via, victim.Name, api.NodeReady)
			})
		}
	}

	// 300 pods over the 5 nodes.
	for _, d := range []string{"heal", "fenced"} {
		if err := via.client.DeleteDeployment(ctx, api.DefaultNamespace, d); err != nil {
			b.Fatal(err)
		}
	}
	waitUntil(b, 3*time.Minute, "deployments gone", func(ctx context.Context) error {
		pods, err := podsOn(ctx, via, "", "")
		if err != nil || len(pods) > 0 {
			return fmt.Errorf("%d pods left (%v)", len(pods), err)
		}
		return nil
	})
	// With terraform, through a server's API, as a user would: apply
	// returns once every replica is ready (wait_for_rollout).
	cfg := fmt.Sprintf(`
resource "flotilla_deployment" "many" {
  api_connection = {
    endpoint    = %[1]q
    token       = %[2]q
    ca_cert_pem = %[3]q
  }
  name     = "many"
  replicas = 300
  container {
    name  = "app"
    image = "flotilla.local/demo:v1"
    port {
      container_port = 8080
    }
  }
  timeouts {
    create = "10m"
  }
}
`, via.endpoint(), bf.apiToken, string(bf.caPEM))
	var many time.Duration
	bf.do(b, func(t *testing.T) {
		start := time.Now()
		out, err := terraformCLI(t, cfg, "apply", "-auto-approve")
		many = time.Since(start)
		if err != nil {
			t.Fatalf("terraform apply of 300 replicas: %v\n%s", err, tail(out, 30))
		}
	})
	if err := readyElsewhere(ctx, via, "many", 300, ""); err != nil {
		b.Fatalf("after apply: %v", err)
	}

	for b.Loop() {
	}
	b.ReportMetric(0, "ns/op")
	for how, key := range map[string]string{"kill -9": "kill", "SIGSTOP": "stop", "link cut": "cut"} {
		fig := results[how]
		b.ReportMetric(median(fig.repair), "s/repair-"+key)
		b.ReportMetric(median(fig.backStop), "s/back-stop-"+key)
		b.Logf("%s, %d times: ready elsewhere median %.1f s (min %.1f, max %.1f); back, replaced pods stopped after median %.1f s",
			how, len(fig.repair), median(fig.repair), slices.Min(fig.repair), slices.Max(fig.repair), median(fig.backStop))
	}
	if f := results["link cut"].fenceLead; len(f) > 0 {
		b.ReportMetric(slices.Max(f), "s/fenced-overlap-max")
		b.Logf("link cut: self-fencing pods stopped before their replacements ran in %d of %d cuts (stop minus replacement start: max %.1f s; negative means no overlap)",
			countNegative(f), len(f), slices.Max(f))
	}
	b.ReportMetric(many.Seconds(), "s/300-pods-ready")
	b.Logf("300 pods over 5 nodes: terraform apply until all ready took %.1f s", many.Seconds())
}

// rebalance moves a share of the pods onto victim: it drains the other
// clients (their pods may only go to victim and the servers), then
// uncordons them.
func rebalance(b *testing.B, via *fleetNode, clients []*fleetNode, victim *fleetNode) {
	b.Helper()
	ctx := context.Background()
	for _, c := range clients {
		if c == victim {
			continue
		}
		if _, err := via.client.SetNodeSchedule(ctx, c.Name, api.NodeSchedule{Draining: true}); err != nil {
			b.Fatal(err)
		}
		waitUntil(b, 3*time.Minute, c.Name+" drained", func(ctx context.Context) error {
			pods, err := podsOn(ctx, via, c.Name, "")
			if err != nil || len(pods) > 0 {
				return fmt.Errorf("%d pods on %s (%v)", len(pods), c.Name, err)
			}
			return nil
		})
		if _, err := via.client.SetNodeSchedule(ctx, c.Name, api.NodeSchedule{}); err != nil {
			b.Fatal(err)
		}
	}
}

func countNegative(v []float64) int {
	n := 0
	for _, x := range v {
		if x < 0 {
			n++
		}
	}
	return n
}
