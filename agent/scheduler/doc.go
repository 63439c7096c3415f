// Package scheduler decides, for one deployment, which pods to create (and
// on which node) and which to stop. Like Nomad's scheduler it is a pure
// function of its input — no I/O, no clock, no randomness of its own (the
// caller injects pod-name suffixes) — so it is tested with plain values.
//
// It must not read or write the state store, talk to nodes or import other
// agent packages: the controller gathers the Input from the store and
// applies the Plan through it.
package scheduler
