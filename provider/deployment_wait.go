package provider

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/flotilla-io/flotilla/api"
)

// errRolloutFailed marks a rollout the agent reported as stuck.
var errRolloutFailed = errors.New("rollout failed")

// waiter polls the agent until a deployment reaches a state. ctx carries the
// deadline from the resource's timeouts block.
type waiter struct {
	client *api.Client
	every  time.Duration
}

// rollout polls until the deployment's generation is at least minGen and its
// rollout is complete. It returns the last deployment it read (nil if none)
// so the caller can save its status even on error. It fails at once when the
// agent reports a Failure: a bad image or a crash loop will not fix itself,
// and waiting out the timeout only hides the reason.
func (w waiter) rollout(ctx context.Context, ns, name string, minGen uint64, timeout time.Duration, op string) (*api.Deployment, error) {
	id := deploymentID(ns, name)
	var last *api.Deployment
	var lastErr error
	lastMsg := ""
	start := time.Now()
	t := time.NewTicker(w.every)
	defer t.Stop()
	for {
		d, err := w.client.GetDeployment(ctx, ns, name)
		switch {
		case err == nil:
			last, lastErr = d, nil
			current := d.Generation >= minGen
			if msg := "rollout: " + progress(d); msg != lastMsg {
				lastMsg = msg
				tflog.Info(ctx, msg, map[string]any{"deployment": id, "generation": d.Generation, "complete": d.Status.Complete})
			}
			if current && d.Status.Failure != "" {
				return last, fmt.Errorf("%w: rollout of %s failed: %s", errRolloutFailed, id, failureDetail(d.Status.Failure))
			}
			if current && d.Status.Complete {
				return last, nil
			}
		case api.IsNotFound(err):
			return last, fmt.Errorf("deployment %s disappeared while waiting for its rollout; was it deleted outside Terraform?", id)
		case ctx.Err() != nil:
			// Reported below.
		case !retryable(err):
			return last, fmt.Errorf("poll deployment %s: %w", id, err)
		default:
			// An agent restarting or electing a leader should not fail a
			// rollout that is otherwise fine: retry until the deadline.
			lastErr = err
			tflog.Warn(ctx, "polling deployment failed; retrying", map[string]any{"deployment": id, "error": err.Error()})
		}
		select {
		case <-ctx.Done():
			return last, rolloutTimeoutError(ctx, id, last, lastErr, time.Since(start), timeout, op)
		case <-t.C:
		}
	}
}

// failureDetail is a rollout failure as the agent reported it, with what to
// do about it where the provider knows better than the agent: pods that no
// node can take wait for capacity that nothing in the rollout will free.
func failureDetail(failure string) string {
	if strings.Contains(failure, "cannot place") {
		return strings.TrimRight(failure, ". ") + ". " + unschedulableHint
	}
	return failure
}

func rolloutTimeoutError(ctx context.Context, id string, last *api.Deployment, lastErr error, waited, timeout time.Duration, op string) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("interrupted after %s while waiting for the rollout of %s (%s)", waited.Round(time.Second), id, progress(last))
	}
	msg := fmt.Sprintf("timed out after %s waiting for the rollout of %s: %s", timeout, id, progress(last))
	if last != nil {
		msg += fmt.Sprintf(" (generation %d)", last.Generation)
	}
	if lastErr != nil {
		msg += fmt.Sprintf("; last poll failed: %v", lastErr)
	}
	return errors.New(msg + ". Check the deployment's pods (data source flotilla_pods shows their node, phase and " +
		"readiness) for pods that cannot be scheduled (cpu/memory requests larger than any node), slow image pulls " +
		"or failing readiness (a readiness_probe that never succeeds); if the rollout is merely slow, raise timeouts." + op + ", or set wait_for_rollout = false")
}

// gone polls until the deployment is removed (GetDeployment answers 404),
// which the agent does once all its pods are stopped.
func (w waiter) gone(ctx context.Context, ns, name string, timeout time.Duration) error {
	id := deploymentID(ns, name)
	var last *api.Deployment
	var lastErr error
	t := time.NewTicker(w.every)
	defer t.Stop()
	for {
		d, err := w.client.GetDeployment(ctx, ns, name)
		switch {
		case err == nil:
			if last == nil || last.Status.Replicas != d.Status.Replicas {
				tflog.Info(ctx, fmt.Sprintf("deletion: %d pods left", d.Status.Replicas), map[string]any{"deployment": id})
			}
			last, lastErr = d, nil
		case api.IsNotFound(err):
			return nil
		case ctx.Err() != nil:
		case !retryable(err):
			return fmt.Errorf("poll deployment %s: %w", id, err)
		default:
			lastErr = err
			tflog.Warn(ctx, "polling deployment failed; retrying", map[string]any{"deployment": id, "error": err.Error()})
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return fmt.Errorf("interrupted while waiting for the pods of %s to stop", id)
			}
			msg := fmt.Sprintf("timed out after %s waiting for deployment %s to be removed", timeout, id)
			if last != nil {
				msg += fmt.Sprintf("; %d pods had not stopped yet", last.Status.Replicas)
			}
			if lastErr != nil {
				msg += fmt.Sprintf("; last poll failed: %v", lastErr)
			}
			return errors.New(msg + ". The agent has accepted the deletion and keeps stopping the pods; check that the " +
				"nodes running them are up (a down node cannot report its pods stopped), or raise timeouts.delete")
		case <-t.C:
		}
	}
}

// retryable reports whether a failed poll may succeed if repeated: network
// errors, server errors and throttling; not a bad token or a bad request.
func retryable(err error) bool {
	var e *api.Error
	if !errors.As(err, &e) {
		return true
	}
	return e.StatusCode >= 500 || e.StatusCode == http.StatusTooManyRequests
}
