// Package acceptance holds Flotilla's end-to-end tests: the real terraform
// binary drives the provider against real flotilla-agent processes, each with
// its own containerd, bridge, pod range, iptables chains and network
// namespaces, pulling the demo image from Debian's docker-registry on
// loopback. `make test` runs them (TF_ACC=1, as root); every test removes
// what it made, even when it fails.
package acceptance
