package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestParseFetch(t *testing.T) {
	tests := []struct {
		query   string
		want    fetchSpec
		wantErr string
	}{
		{query: "url=http://web/hostname", want: fetchSpec{URL: "http://web/hostname", N: 1, Timeout: 2 * time.Second}},
		{query: "url=http://web/&n=300&timeout=500ms", want: fetchSpec{URL: "http://web/", N: 300, Timeout: 500 * time.Millisecond}},
		{query: "udp=web:7&duration=5s&interval=10ms", want: fetchSpec{UDP: "web:7", N: maxFetchN, Duration: 5 * time.Second, Interval: 10 * time.Millisecond, Timeout: 2 * time.Second}},
		{query: "url=http://web/&duration=1s&n=5", want: fetchSpec{URL: "http://web/", N: 5, Duration: time.Second, Timeout: 2 * time.Second}},
		{query: "", wantErr: "exactly one of"},
		{query: "url=http://a/&udp=a:1", wantErr: "exactly one of"},
		{query: "url=ftp://a/", wantErr: "want http://"},
		{query: "url=/relative", wantErr: "want http://"},
		{query: "udp=no-port", wantErr: "want HOST:PORT"},
		{query: "url=http://a/&n=0", wantErr: "n \"0\""},
		{query: "url=http://a/&n=100001", wantErr: "n \"100001\""},
		{query: "url=http://a/&duration=10m", wantErr: "duration \"10m\""},
		{query: "url=http://a/&timeout=-1s", wantErr: "timeout \"-1s\""},
		{query: "url=http://a/&interval=soon", wantErr: "interval \"soon\""},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			q, _ := url.ParseQuery(tt.query)
			got, err := parseFetch(q)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseFetch = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

// getFetch calls /fetch on srv and decodes its answer.
func getFetch(t *testing.T, srv *httptest.Server, query string) *fetchResult {
	t.Helper()
	resp, err := srv.Client().Get(srv.URL + "/fetch?" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/fetch?%s: %s", query, resp.Status)
	}
	var res fetchResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		t.Fatal(err)
	}
	return &res
}

func TestFetchCountsAnswersOnFreshConnections(t *testing.T) {
	var conns atomic.Int32
	target := httptest.NewUnstartedServer(newMux("v1", "backend-1"))
	target.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	target.Start()
	defer target.Close()
	caller := httptest.NewServer(newMux("v1", "caller"))
	defer caller.Close()

	res := getFetch(t, caller, "n=20&url="+url.QueryEscape(target.URL+"/hostname"))
	if res.Requests != 20 || res.OK != 20 || res.Errors != 0 {
		t.Fatalf("requests %d ok %d errors %d (%v), want 20 20 0", res.Requests, res.OK, res.Errors, res.Samples)
	}
	a := res.Answers["backend-1"]
	if len(res.Answers) != 1 || a == nil || a.Count != 20 || a.Last.Before(a.First) || a.First.Before(res.Started) {
		t.Fatalf("answers %+v, want backend-1 20 times", res.Answers)
	}
	if conns := conns.Load(); conns != 20 {
		t.Errorf("%d connections for 20 requests; each request must dial afresh to be balanced afresh", conns)
	}
}

func TestFetchFailureKinds(t *testing.T) {
	caller := httptest.NewServer(newMux("v1", "caller"))
	defer caller.Close()
	// A port nothing listens on: taken, then released.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer slow.Close()
	missing := httptest.NewServer(http.NotFoundHandler())
	defer missing.Close()

	tests := []struct {
		name, query, kind string
	}{
		{"refused", "n=3&url=" + url.QueryEscape("http://"+closed+"/"), "refused"},
		{"timeout", "n=2&timeout=100ms&url=" + url.QueryEscape(slow.URL+"/"), "timeout"},
		{"status", "n=2&url=" + url.QueryEscape(missing.URL+"/"), "http 404"},
		{"udp refused", "n=2&udp=" + closed, "refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := getFetch(t, caller, tt.query)
			f := res.Failures[tt.kind]
			if res.OK != 0 || f == nil || f.Count != res.Requests || res.Errors != res.Requests || len(res.Samples) == 0 {
				t.Fatalf("failures %v (samples %q), want every request to fail with %q", res.Failures, res.Samples, tt.kind)
			}
		})
	}
}

func TestFetchDurationAndInterval(t *testing.T) {
	target := httptest.NewServer(newMux("v1", "b"))
	defer target.Close()
	start := time.Now()
	res := fetch(context.Background(), fetchSpec{URL: target.URL + "/hostname", N: maxFetchN, Duration: 400 * time.Millisecond, Interval: 50 * time.Millisecond, Timeout: time.Second})
	took := time.Since(start)
	// 400 ms at one request per ~50 ms: about 8; a slow machine makes fewer.
	if res.Requests < 2 || res.Requests > 9 || res.Errors != 0 {
		t.Errorf("%d requests, %d errors in 400 ms at 50 ms intervals", res.Requests, res.Errors)
	}
	if took > 2*time.Second {
		t.Errorf("fetch for 400 ms took %s", took)
	}
}

func TestFetchStopsWhenCallerGoes(t *testing.T) {
	target := httptest.NewServer(newMux("v1", "b"))
	defer target.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	res := fetch(ctx, fetchSpec{URL: target.URL + "/hostname", N: maxFetchN, Duration: time.Minute, Interval: 20 * time.Millisecond, Timeout: time.Second})
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("fetch went on for %s after its caller left", took)
	}
	if res.Errors != 0 {
		t.Errorf("a request cut short by the caller counted as a failure: %v", res.Failures)
	}
}

func TestServeUDPAnswersHostname(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveUDP(ctx, pc, []byte("pod-7\n")) }()

	res := fetch(context.Background(), fetchSpec{UDP: pc.LocalAddr().String(), N: 10, Timeout: time.Second})
	if res.OK != 10 || res.Answers["pod-7"] == nil || res.Answers["pod-7"].Count != 10 {
		t.Errorf("UDP answers %+v, failures %v; want pod-7 10 times", res.Answers, res.Samples)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serveUDP returned %v on shutdown, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serveUDP did not stop when its context ended")
	}
}

func TestFailureKind(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, "refused"},
		{&net.DNSError{Err: "no such host", Name: "web", IsNotFound: true}, "dns"},
		{&net.OpError{Op: "read", Err: syscall.ECONNRESET}, "reset"},
		{context.DeadlineExceeded, "timeout"},
		{httpStatusError(503), "http 503"},
		{errors.New("something else"), "other"},
	}
	for _, tt := range tests {
		if got := failureKind(tt.err); got != tt.want {
			t.Errorf("failureKind(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestLookup(t *testing.T) {
	srv := httptest.NewServer(newMux("v1", "host-1"))
	defer srv.Close()
	get := func(query string) (int, lookupResult) {
		t.Helper()
		resp, err := srv.Client().Get(srv.URL + "/lookup?" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var res lookupResult
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, res
	}
	// localhost is in /etc/hosts, which Go's resolver reads first: no DNS
	// server needed.
	if code, res := get("name=localhost"); code != 200 || res.Error != "" || !contains(res.Addrs, "127.0.0.1") {
		t.Errorf("lookup localhost = %d %+v, want 127.0.0.1", code, res)
	}
	for _, q := range []string{"", "name=x&type=MX", "name=x&timeout=2h"} {
		if code, _ := get(q); code != http.StatusBadRequest {
			t.Errorf("lookup?%s = %d, want 400", q, code)
		}
	}
}

// A fetch longer than the server's write timeout (10 s in main) still gets
// its answer.
func TestFetchOutlastsWriteTimeout(t *testing.T) {
	target := httptest.NewServer(newMux("v1", "b"))
	defer target.Close()
	caller := httptest.NewUnstartedServer(newMux("v1", "caller"))
	caller.Config.WriteTimeout = 200 * time.Millisecond
	caller.Start()
	defer caller.Close()
	res := getFetch(t, caller, "duration=500ms&interval=20ms&url="+url.QueryEscape(target.URL+"/hostname"))
	if res.OK == 0 || res.Errors != 0 {
		t.Errorf("fetch: %d answers, failures %v", res.OK, res.Failures)
	}
}
