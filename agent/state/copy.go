package state

import (
	"maps"
	"slices"

	"github.com/flotilla-io/flotilla/api"
)

// Deep copies, so what a read returns shares nothing with the tables.

func copyDeployment(d api.Deployment) api.Deployment {
	d.Labels = maps.Clone(d.Labels)
	d.Containers = api.CloneContainers(d.Containers)
	d.NodeSelector = maps.Clone(d.NodeSelector)
	d.AntiAffinity = api.CloneAntiAffinity(d.AntiAffinity)
	if d.MinReadySeconds != nil {
		v := *d.MinReadySeconds
		d.MinReadySeconds = &v
	}
	return d
}

func copyPod(p api.Pod) api.Pod {
	p.Labels = maps.Clone(p.Labels)
	p.Containers = api.CloneContainers(p.Containers)
	p.AntiAffinity = api.CloneAntiAffinity(p.AntiAffinity)
	p.Status = copyPodStatus(p.Status)
	return p
}

func copyNode(n api.Node) api.Node {
	n.Labels = maps.Clone(n.Labels)
	n.Conditions = slices.Clone(n.Conditions)
	return n
}

func copyPodStatus(s api.PodStatus) api.PodStatus {
	s.Events = slices.Clone(s.Events)
	if s.Containers == nil {
		return s
	}
	cs := make([]api.ContainerStatus, len(s.Containers))
	for i, c := range s.Containers {
		c.LastLog = slices.Clone(c.LastLog)
		cs[i] = c
	}
	s.Containers = cs
	return s
}
