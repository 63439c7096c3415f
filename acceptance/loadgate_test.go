package acceptance

import (
	"sync"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
)

// loadGate keeps the heaviest test apart from terraform steps. Each step
// serves the provider in this process and gives it 2 s, hard-coded in
// terraform-plugin-sdk's DebugServe, to announce its address; with 200
// simulated nodes starting on the 2-core machine beside a lab, it once did
// not ("timeout waiting on reattach config"). Tests hold it shared while
// terraform runs (tfTest), the simulated fleet exclusively (heavyLoad).
var loadGate sync.RWMutex

// tfTest is resource.Test under the shared side of loadGate.
func tfTest(t *testing.T, tc resource.TestCase) {
	t.Helper()
	loadGate.RLock()
	defer loadGate.RUnlock()
	resource.Test(t, tc)
}

// heavyLoad holds loadGate exclusively until t ends.
func heavyLoad(t *testing.T) {
	loadGate.Lock()
	t.Cleanup(loadGate.Unlock)
}
