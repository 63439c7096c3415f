package api

import (
	"maps"
	"slices"
)

// CloneContainers deep-copies containers, so a copy handed out of the state
// or into a new pod shares no slices or maps with the original.
func CloneContainers(cs []Container) []Container {
	if cs == nil {
		return nil
	}
	out := make([]Container, len(cs))
	for i, c := range cs {
		c.Command = slices.Clone(c.Command)
		c.Args = slices.Clone(c.Args)
		c.Env = maps.Clone(c.Env)
		c.Ports = slices.Clone(c.Ports)
		out[i] = c
	}
	return out
}
