package ingress

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/flotilla-io/flotilla/api"
)

const sampleLine = "<190>Dec  1 03:31:14 flotilla: default/app\t200\t0.001\tGET\thttp\tapp.test\t/api/x\t127.0.0.1\t127.0.0.1:8080\t200\t66\tHTTP/1.1"

func TestAccessLogLine(t *testing.T) {
	var buf bytes.Buffer
	a, err := newAccessLog(slog.New(slog.NewTextHandler(&buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer a.conn.Close()
	a.setKnown([]api.Ingress{{Namespace: "default", Name: "app"}})
	for _, l := range []string{
		sampleLine,
		"garbage",
		"<190>Dec  1 03:31:14 flotilla: too\tfew",
		"<190>Dec  1 03:31:14 flotilla: x\t2000\t0\tGET\thttp\th\t/\tc\tu\tus\t1\tp", // status not 3 digits
	} {
		a.line([]byte(l))
	}
	if n := testutil.CollectAndCount(a.requests); n != 1 {
		t.Errorf("%d series, want 1 (only the well-formed line counts)", n)
	}
	for _, want := range []string{"ingress=default/app", "status=200", "path=/api/x", "upstream=127.0.0.1:8080"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("log line %q lacks %q", buf.String(), want)
		}
	}
	// A line naming an ingress the configuration does not have (a forged
	// datagram) is counted as "-": no new label values.
	a.line([]byte(strings.Replace(sampleLine, "default/app", "forged/x", 1)))
	if n := testutil.CollectAndCount(a.requests); n != 2 || !strings.Contains(buf.String(), "ingress=- ") {
		t.Errorf("a forged ingress name: %d series, log %q; want it counted as -", n, buf.String())
	}
}

func BenchmarkAccessLogLine(b *testing.B) {
	a, err := newAccessLog(slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	defer a.conn.Close()
	a.setKnown([]api.Ingress{{Namespace: "default", Name: "app"}})
	line := []byte(sampleLine)
	b.ReportAllocs()
	for b.Loop() {
		a.line(line)
	}
}

// Datagrams sent to the reader's loopback port, in bursts it takes several
// per read, all count: as "-" before any configuration is in force and
// once their ingress no longer is.
func TestAccessLogReadsDatagrams(t *testing.T) {
	a, err := newAccessLog(nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	c, err := net.Dial("udp", a.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	send := func(n int) {
		for range n {
			if _, err := c.Write([]byte(sampleLine)); err != nil {
				t.Fatal(err)
			}
		}
	}
	count := func(ingress string) uint64 {
		m := &dto.Metric{}
		if err := a.requests.WithLabelValues(ingress, "200").(prometheus.Histogram).Write(m); err != nil {
			t.Fatal(err)
		}
		return m.GetHistogram().GetSampleCount()
	}
	waitCount := func(ingress string, want uint64) {
		deadline := time.Now().Add(5 * time.Second)
		for count(ingress) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d requests counted, want %d", ingress, count(ingress), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	send(2) // before any configuration is in force (the agent's start)
	waitCount("-", 2)
	a.setKnown([]api.Ingress{{Namespace: "default", Name: "app"}})
	send(200)
	waitCount("default/app", 200)
	a.setKnown(nil)
	send(3)
	waitCount("-", 5)
	waitCount("default/app", 200)
}
