package acceptance

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-io/flotilla/api"
)

// TestAccQuickstart applies examples/quickstart, as `make quickstart` does,
// to a dev agent with the real terraform, and opens the URLs it prints:
// a replica's, the service's and the ingress's, each answered by the app.
// Then it destroys it all.
func TestAccQuickstart(t *testing.T) {
	t.Parallel()
	a := startAgent(t)
	mainTF, err := os.ReadFile("../examples/quickstart/main.tf")
	if err != nil {
		t.Fatal(err)
	}
	tf := terraformDir(t, string(mainTF), []string{api.EnvAddr + "=http://" + a.cfg.APIAddr, api.EnvToken + "=" + a.token})
	vars := []string{"-var", "replicas=2", "-var", "image=" + image("v1"), "-var", fmt.Sprintf("ingress_port=%d", a.cfg.IngressHTTPPort)}
	if out, err := tf(append([]string{"apply", "-auto-approve"}, vars...)...); err != nil {
		t.Fatalf("terraform apply: %v\n%s", err, out)
	}
	client := &http.Client{Timeout: 3 * time.Second}
	for _, output := range []string{"service_url", "ingress_url"} {
		u, err := tf("output", "-raw", output)
		if err != nil {
			t.Fatalf("terraform output %s: %v %s", output, err, u)
		}
		// The service rules and the proxy follow the apply within a
		// second or two.
		var last string
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := client.Get(u)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK && strings.HasPrefix(string(b), "flotilla-demo version=") {
					t.Logf("%s %s → %s", output, u, strings.TrimSpace(string(b)))
					break
				}
				last = fmt.Sprintf("%d %q", resp.StatusCode, b)
			} else {
				last = err.Error()
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s %s: %s", output, u, last)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if out, err := tf(append([]string{"destroy", "-auto-approve"}, vars...)...); err != nil {
		t.Fatalf("terraform destroy: %v\n%s", err, out)
	}
}
