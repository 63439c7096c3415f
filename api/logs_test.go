package api

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLogOptionsQueryRoundTrip(t *testing.T) {
	since := time.Date(2025, 5, 1, 10, 0, 0, 123, time.UTC)
	for _, o := range []LogOptions{
		{},
		{Container: "app", Follow: true, Previous: true, Tail: Lines(0), Since: 90 * time.Second, Timestamps: true},
		{Tail: Lines(MaxLogTail), SinceTime: since},
	} {
		got, err := ParseLogOptions(o.Query())
		if err != nil || !reflect.DeepEqual(got, o) {
			t.Errorf("%+v: query %q parses to %+v, %v", o, o.Query().Encode(), got, err)
		}
	}
}

func TestParseLogOptions(t *testing.T) {
	for _, tc := range []struct {
		query string
		ok    bool
	}{
		{"follow&timestamps=1&previous=false", true},
		{"since=2025-05-01T10:00:00Z", true},
		{"since=1h30m&tail=10", true},
		{"follow=maybe", false},
		{"tail=-1", false},
		{"tail=100001", false},
		{"tail=x", false},
		{"since=-5m", false},
		{"since=last+week", false},
		{"container=Bad_Name", false},
		{"lines=3", false},
	} {
		q, _ := url.ParseQuery(tc.query)
		_, err := ParseLogOptions(q)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok=%v", tc.query, err, tc.ok)
		}
	}
	q, _ := url.ParseQuery("follow&timestamps=1&previous=false")
	if o, _ := ParseLogOptions(q); !o.Follow || !o.Timestamps || o.Previous {
		t.Errorf("flags: %+v", o)
	}
	if err := (LogOptions{Since: time.Minute, SinceTime: time.Now()}).Validate(); err == nil {
		t.Error("both since forms passed")
	}
}

func TestPodLogsStreams(t *testing.T) {
	t.Parallel()
	more := make(chan string)
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/namespaces/default/pods/missing/logs" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":"pod default/missing not found"}`)
			return
		}
		if r.URL.Path != "/v1/namespaces/default/pods/web-1/logs" || r.URL.RawQuery != "container=app&follow=true&tail=2" || r.Header.Get("Authorization") != "Bearer tok" {
			t.Errorf("request %s?%s", r.URL.Path, r.URL.RawQuery)
		}
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		for {
			select {
			case l := <-more:
				io.WriteString(w, l)
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				close(done)
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	// A client timeout shorter than the stream: it must not cut it.
	c, err := NewClient(&Config{Address: srv.URL, Token: "tok", HTTPClient: &http.Client{Timeout: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := c.PodLogs(context.Background(), "default", "web-1", LogOptions{Container: "app", Follow: true, Tail: Lines(2)})
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(rc)
	if l, _ := r.ReadString('\n'); l != "first\n" {
		t.Fatalf("read %q", l)
	}
	time.Sleep(200 * time.Millisecond)
	more <- "second\n"
	if l, err := r.ReadString('\n'); l != "second\n" {
		t.Fatalf("read %q, %v after the client's timeout", l, err)
	}
	rc.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("closing the stream did not end the request")
	}

	_, err = c.PodLogs(context.Background(), "default", "missing", LogOptions{})
	var ae *Error
	if !errors.As(err, &ae) || ae.StatusCode != 404 || !strings.Contains(ae.Message, "not found") || !IsNotFound(err) {
		t.Fatalf("missing pod: %v", err)
	}
	if _, err := c.PodLogs(context.Background(), "default", "web-1", LogOptions{Tail: Lines(-3)}); err == nil {
		t.Fatal("invalid options were sent")
	}
}
