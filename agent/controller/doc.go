// Package controller runs on the raft leader: it turns deployments into pod
// placements with the pure scheduler, stops pods a deployment no longer
// wants, removes deleted deployments once their pods are gone, and computes
// the status a user sees (ComputeStatus). It never touches containers or
// networks; nodes do that.
package controller
