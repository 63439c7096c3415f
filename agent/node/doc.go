// Package node runs on every agent: it makes the containers and pod networks
// on this machine match the pods the state assigns to this node, reports
// what it observes (phase, IP, readiness, exits, restarts) back to the state,
// and adopts what is already running after an agent restart. Crashed
// containers restart with exponential backoff, like the kubelet.
//
// It talks to containers only through runtime.Runtime and to networks only
// through podnet.Network; it never schedules.
package node
