package podnet

import (
	"context"
	"reflect"
	"testing"
)

func TestFakePortMappings(t *testing.T) {
	ctx := context.Background()
	f := NewFake()
	a, err := f.Setup(ctx, "web", WithPortMappings([]PortMapping{{HostPort: 80, ContainerPort: 8080}, {HostPort: 80, ContainerPort: 8080, Protocol: "TCP"}}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := f.PortMappings("web"), []PortMapping{{HostPort: 80, ContainerPort: 8080, Protocol: "tcp"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("recorded %v, want %v", got, want)
	}
	// Setup again replaces them and keeps the attachment.
	again, err := f.Setup(ctx, "web")
	if err != nil || again != a {
		t.Errorf("second setup = %+v, %v; want %+v", again, err, a)
	}
	if got := f.PortMappings("web"); got != nil {
		t.Errorf("recorded %v after setup without host ports", got)
	}
	if _, err := f.Setup(ctx, "bad", WithPortMappings([]PortMapping{{HostPort: 80, ContainerPort: 1}, {HostPort: 80, ContainerPort: 2}})); err == nil {
		t.Error("a host port mapped twice was accepted")
	}
	if _, err := f.Setup(ctx, "db", WithPortMappings([]PortMapping{{HostPort: 5432, ContainerPort: 5432}})); err != nil {
		t.Fatal(err)
	}
	if err := f.Teardown(ctx, "db"); err != nil {
		t.Fatal(err)
	}
	if got := f.PortMappings("db"); got != nil {
		t.Errorf("recorded %v after teardown", got)
	}
}
