package clientstate

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/flotilla-io/flotilla/agent/rpc"
	"github.com/flotilla-io/flotilla/api"
)

const testKey = "-----BEGIN PRIVATE KEY-----\nSECRET-KEY-MATERIAL\n-----END PRIVATE KEY-----\n"

func testIngress(name, host string) api.Ingress {
	return api.Ingress{Namespace: "default", Name: name,
		Rules: []api.IngressRule{{Host: host, Paths: []api.IngressPath{{Path: "/", Backend: api.IngressBackend{Service: "web", Port: 80}}}}},
		TLS:   []api.IngressTLS{{Hosts: []string{host}, Certificate: "CERT", Key: testKey, KeySHA256: api.KeyDigest(testKey)}}}
}

func ingEv(index uint64, in api.Ingress) rpc.WatchEvent {
	return rpc.WatchEvent{Index: index, Kind: rpc.WatchIngress, Key: in.ID(), Ingress: &in}
}

func TestIngressesInTheView(t *testing.T) {
	path := filepath.Join(t.TempDir(), "client-state.json")
	var logs bytes.Buffer
	s, err := Open(path, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	noKey := testIngress("nokey", "nokey.example.com")
	noKey.TLS[0].Key = ""
	badHost := testIngress("bad", "bad.example.com")
	badHost.TLS[0].Hosts = []string{"NOT A HOST"}
	steps := []struct {
		name      string
		resp      rpc.WatchResponse
		ingresses int
		changed   bool
	}{
		{"reset", rpc.WatchResponse{Index: 5, Reset: true, Events: []rpc.WatchEvent{ingEv(3, testIngress("shop", "shop.example.com"))}}, 1, true},
		{"a second one", rpc.WatchResponse{Index: 7, Events: []rpc.WatchEvent{ingEv(7, testIngress("blog", "blog.example.com"))}}, 2, true},
		{"the same again", rpc.WatchResponse{Index: 8, Events: []rpc.WatchEvent{ingEv(7, testIngress("blog", "blog.example.com"))}}, 2, false},
		{"one without its key is dropped", rpc.WatchResponse{Index: 9, Events: []rpc.WatchEvent{ingEv(9, noKey)}}, 2, false},
		{"an invalid one is dropped", rpc.WatchResponse{Index: 10, Events: []rpc.WatchEvent{ingEv(10, badHost)}}, 2, false},
		{"a key under another name is dropped", rpc.WatchResponse{Index: 11, Events: []rpc.WatchEvent{{Index: 11, Kind: rpc.WatchIngress, Key: "default/other", Ingress: &badHost}}}, 2, false},
		{"deleted", rpc.WatchResponse{Index: 12, Events: []rpc.WatchEvent{{Index: 12, Kind: rpc.WatchIngress, Key: "default/blog", Deleted: true}}}, 1, true},
		{"a reset without it drops it", rpc.WatchResponse{Index: 14, Reset: true}, 0, true},
		{"back", rpc.WatchResponse{Index: 15, Events: []rpc.WatchEvent{ingEv(15, testIngress("shop", "shop.example.com"))}}, 1, true},
	}
	for _, st := range steps {
		before := s.IngressesChanged()
		if err := s.Apply(st.resp); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := len(s.Ingresses()); got != st.ingresses {
			t.Errorf("%s: %d ingresses, want %d", st.name, got, st.ingresses)
		}
		if changed := s.IngressesChanged() > before; changed != st.changed {
			t.Errorf("%s: IngressesChanged moved %v, want %v", st.name, changed, st.changed)
		}
	}
	if l := s.Ingresses(); len(l) != 1 || l[0].TLS[0].Key != testKey {
		t.Fatalf("the view lost the key: %+v", l)
	}
	// Reads are copies.
	s.Ingresses()[0].TLS[0].Hosts[0] = "changed.example.com"
	if s.Ingresses()[0].TLS[0].Hosts[0] != "shop.example.com" {
		t.Error("a read shares the view's slices")
	}
	want := s.Ingresses()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The cache holds the keys: only its owner reads it.
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("cache mode %v, want 0600", fi.Mode().Perm())
	}
	again, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if !reflect.DeepEqual(again.Ingresses(), want) || again.IngressesChanged() == 0 {
		t.Errorf("after a restart: %+v, want %+v", again.Ingresses(), want)
	}
	if strings.Contains(logs.String(), "SECRET-KEY-MATERIAL") {
		t.Errorf("a log line holds a key:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "dropping an object") {
		t.Errorf("dropped ingresses were not logged:\n%s", logs.String())
	}
}
