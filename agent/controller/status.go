package controller

import (
	"fmt"
	"sort"
	"strings"

	"github.com/flotilla-io/flotilla/api"
)

// CrashLoopFailureRestarts is how many restarts of a container of the current
// generation make the rollout fail fast instead of waiting out its timeout.
const CrashLoopFailureRestarts = 3

// ComputeStatus derives a deployment's status from its pods. unschedulable,
// when set, is why the scheduler could not place a pod.
func ComputeStatus(d api.Deployment, pods []api.Pod, unschedulable string) api.DeploymentStatus {
	var s api.DeploymentStatus
	var failures []string
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	for _, p := range pods {
		if p.Stop {
			continue
		}
		s.Replicas++
		current := p.Generation == d.Generation
		if current {
			s.UpdatedReplicas++
		}
		if p.Status.Ready {
			s.ReadyReplicas++
			if current {
				s.UpdatedReadyReplicas++
			}
		}
		if current {
			if f := podFailure(p); f != "" {
				failures = append(failures, f)
			}
		}
	}
	s.Complete = !d.Deleting && s.Replicas == d.Replicas && s.UpdatedReplicas == d.Replicas && s.UpdatedReadyReplicas == d.Replicas
	if len(failures) == 0 && unschedulable != "" && !s.Complete {
		failures = append(failures, "cannot place pods: "+unschedulable)
	}
	if len(failures) > 0 {
		// One pod's story is enough to act on; say how many share it.
		s.Failure = failures[0]
		if len(failures) > 1 {
			s.Failure += fmt.Sprintf(" (and %d more pods failing)", len(failures)-1)
		}
	}
	return s
}

// The node reports reasons that fail a rollout only for errors that will not
// go away by themselves (a missing image, a spec that cannot run) or that
// lasted (it retries transient ones a few times under ContainerCreating
// first); a crash loop fails it after CrashLoopFailureRestarts.

// podFailure says why a pod of the current generation cannot come up on its
// own, or "" while it may still.
func podFailure(p api.Pod) string {
	for _, c := range p.Status.Containers {
		switch {
		case c.Reason == api.ReasonErrImagePull:
			return fmt.Sprintf("pod %s: container %q: image %q cannot be pulled: %s", p.Name, c.Name, imageOf(p, c.Name), c.Message)
		case c.Reason == api.ReasonCreateError:
			return fmt.Sprintf("pod %s: container %q cannot be created: %s", p.Name, c.Name, c.Message)
		case c.Reason == api.ReasonOOMKilled && c.RestartCount >= CrashLoopFailureRestarts:
			return fmt.Sprintf("pod %s: container %q was %s, %d times: raise its memory_limit or make it use less memory", p.Name, c.Name, oomWhat(p, c.Name), c.RestartCount)
		case c.Reason == api.ReasonCrashLoopBackOff && c.RestartCount >= CrashLoopFailureRestarts:
			msg := fmt.Sprintf("pod %s: container %q is crash-looping: it exited with code %d (restarted %d times)", p.Name, c.Name, c.LastExitCode, c.RestartCount)
			if len(c.LastLog) > 0 {
				msg += "; last log lines:\n  " + strings.Join(c.LastLog, "\n  ")
			}
			return msg
		}
	}
	if p.Status.Reason == api.ReasonCreateError && p.Status.Message != "" {
		return fmt.Sprintf("pod %s cannot be created: %s", p.Name, p.Status.Message)
	}
	if p.Status.Reason == api.ReasonNetworkError {
		return fmt.Sprintf("pod %s: network setup failed: %s", p.Name, p.Status.Message)
	}
	return ""
}

func imageOf(p api.Pod, container string) string {
	for _, c := range p.Containers {
		if c.Name == container {
			return c.Image
		}
	}
	return ""
}

// oomWhat says what an OOM kill of the container was, with its limit.
func oomWhat(p api.Pod, container string) string {
	for _, c := range p.Containers {
		if c.Name == container && c.MemoryLimit > 0 {
			return fmt.Sprintf("killed for going over its memory limit of %d MiB (OOMKilled)", c.MemoryLimit)
		}
	}
	return "killed by the kernel for lack of memory (OOMKilled)"
}
