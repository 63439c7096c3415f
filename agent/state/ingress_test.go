package state

import (
	"bytes"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"

	"github.com/flotilla-io/flotilla/api"
)

const testKey = "-----BEGIN PRIVATE KEY-----\nSECRET-KEY-MATERIAL\n-----END PRIVATE KEY-----\n"

func ing(name, host, path string) api.Ingress {
	return api.Ingress{Namespace: "default", Name: name, Rules: []api.IngressRule{{
		Host:  host,
		Paths: []api.IngressPath{{Path: path, Backend: api.IngressBackend{Service: "web", Port: 80}}},
	}}}
}

func withTLS(in api.Ingress, key string, hosts ...string) api.Ingress {
	in.TLS = append(in.TLS, api.IngressTLS{Hosts: hosts, Certificate: "CERT", Key: key})
	return in
}

func TestIngressCommands(t *testing.T) {
	f := NewFSM(nil)
	a := withTLS(ing("a", "shop.example.com", "/api"), testKey, "shop.example.com")
	// A backend naming a service that does not exist is allowed.
	resp := applyAt(t, f, 1, &CreateIngress{Ingress: a})
	got, ok := resp.(api.Ingress)
	if !ok {
		t.Fatalf("create: %v", resp)
	}
	if got.TLS[0].Key != "" || got.TLS[0].KeySHA256 != api.KeyDigest(testKey) || got.CreateIndex != 1 || got.ModifyIndex != 1 {
		t.Errorf("create answers %+v; want it redacted with the key's digest and indexes", got)
	}
	if r, _ := f.Ingress("default", "a"); r.TLS[0].Key != "" || r.TLS[0].KeySHA256 == "" {
		t.Errorf("Ingress read %+v; want redacted", r)
	}
	if l := f.Ingresses(""); len(l) != 1 || l[0].TLS[0].Key != "" {
		t.Errorf("Ingresses = %+v", l)
	}
	if l := f.IngressesWithKeys(); len(l) != 1 || l[0].TLS[0].Key != testKey {
		t.Errorf("IngressesWithKeys lost the key: %+v", l)
	}

	steps := []struct {
		name string
		cmd  Command
		want error
		msg  string
	}{
		{"create again", &CreateIngress{Ingress: a}, ErrExists, "ingress default/a"},
		{"same host and path", &CreateIngress{Ingress: ing("b", "shop.example.com", "/api")}, ErrConflict,
			"ingress default/b: both route shop.example.com prefix /api as ingress default/a does"},
		{"same TLS host", &CreateIngress{Ingress: withTLS(ing("b", "shop.example.com", "/other"), testKey, "shop.example.com")}, ErrConflict,
			"ingress default/b: both have a TLS certificate for shop.example.com as ingress default/a does"},
		{"same path, other match", &CreateIngress{Ingress: func() api.Ingress {
			in := ing("b", "shop.example.com", "/api")
			in.Rules[0].Paths[0].Match = api.PathExact
			return in
		}()}, nil, ""},
		{"update missing", &UpdateIngress{Ingress: ing("zz", "x.example.com", "/")}, ErrNotFound, "ingress default/zz"},
		{"update clashes with b", &UpdateIngress{Ingress: func() api.Ingress {
			in := ing("a", "shop.example.com", "/api")
			in.Rules[0].Paths[0].Match = api.PathExact
			return in
		}()}, ErrConflict, "ingress default/a: both route shop.example.com exact /api as ingress default/b does"},
		{"update keeps its own routes", &UpdateIngress{Ingress: ing("a", "shop.example.com", "/api")}, nil, ""},
		{"TLS without key is invalid", &CreateIngress{Ingress: withTLS(ing("c", "c.example.com", "/"), "", "c.example.com")}, nil, "skipped"},
		{"delete missing", &DeleteIngress{Namespace: "default", Name: "zz"}, ErrNotFound, "ingress default/zz"},
		{"delete a", &DeleteIngress{Namespace: "default", Name: "a"}, nil, ""},
		{"a's route is free again", &CreateIngress{Ingress: ing("d", "shop.example.com", "/api")}, nil, ""},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			resp := applyAt(t, f, f.Index()+1, st.cmd)
			err, _ := resp.(error)
			switch {
			case st.msg == "" && err != nil:
				t.Fatalf("error %v", err)
			case st.msg != "" && (err == nil || !strings.Contains(err.Error(), st.msg)):
				t.Fatalf("error %v; want one containing %q", err, st.msg)
			case st.want != nil && !errors.Is(err, st.want):
				t.Fatalf("error %v; want %v", err, st.want)
			}
		})
	}
	if _, ok := f.Ingress("default", "a"); ok {
		t.Error("a not deleted")
	}
}

func TestIngressBounds(t *testing.T) {
	f := NewFSM(nil)
	// The table's byte bound: certificates big enough that a few fill it.
	big := strings.Repeat("A", api.MaxIngressPEMBytes-100)
	var err error
	for i := 0; i < 400 && err == nil; i++ {
		host := "h" + strconv.Itoa(i) + ".example.com"
		in := withTLS(ing("big"+strconv.Itoa(i), host, "/"), big, host)
		in.TLS[0].Certificate = big
		err, _ = applyAt(t, f, f.Index()+1, &CreateIngress{Ingress: in}).(error)
	}
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "every node receives every ingress") {
		t.Fatalf("filling the table: %v", err)
	}
	if f.ing.total > MaxIngressTableBytes {
		t.Errorf("table holds %d bytes, more than %d", f.ing.total, MaxIngressTableBytes)
	}
}

func TestIngressCountBound(t *testing.T) {
	f := NewFSM(nil)
	for i := range MaxIngresses {
		in := ing("i"+strconv.Itoa(i), "h"+strconv.Itoa(i)+".example.com", "/")
		f.ingresses[in.ID()] = in // the fast way to a full table
	}
	f.rebuildIngresses(0)
	err, _ := applyAt(t, f, 1, &CreateIngress{Ingress: ing("one-more", "new.example.com", "/")}).(error)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "10000 ingresses") {
		t.Fatalf("create past the bound: %v", err)
	}
	// An update is no new ingress.
	if err, _ := applyAt(t, f, 2, &UpdateIngress{Ingress: ing("i1", "h1.example.com", "/x")}).(error); err != nil {
		t.Fatalf("update at the bound: %v", err)
	}
}

func TestIngressesInEveryView(t *testing.T) {
	f := NewFSM(nil)
	applyAll(t, f, upsertN(nodeRec("n1")), &CreateIngress{Ingress: withTLS(ing("a", "shop.example.com", "/"), testKey, "shop.example.com")})
	since := f.Index()
	changes, reset, _ := f.NodeView("n1", 0)
	var seen *api.Ingress
	for _, c := range changes {
		if c.Kind == ViewIngress {
			seen = c.Ingress
		}
	}
	if !reset || seen == nil || seen.TLS[0].Key != testKey {
		t.Fatalf("whole view: ingress %+v; want it with its key", seen)
	}
	// A change wakes every node's view.
	_, changed, wake := f.WatchNodeView("n2", since)
	if changed {
		t.Fatal("view changed before any write")
	}
	before := f.IngressesChanged()
	applyAll(t, f, &DeleteIngress{Namespace: "default", Name: "a"})
	select {
	case <-wake:
	default:
		t.Fatal("a deleted ingress did not wake the watch")
	}
	if f.IngressesChanged() <= before {
		t.Error("IngressesChanged did not move")
	}
	changes, reset, _ = f.NodeView("n2", since)
	if reset || len(changes) != 1 || changes[0].Kind != ViewIngress || !changes[0].Deleted || changes[0].Key != "default/a" {
		t.Errorf("incremental view %+v", changes)
	}
}

func TestIngressesSurviveSnapshot(t *testing.T) {
	f := NewFSM(nil)
	applyAll(t, f, &CreateIngress{Ingress: withTLS(ing("a", "shop.example.com", "/api"), testKey, "shop.example.com")})
	g := NewFSM(nil)
	if err := g.Restore(readCloser{bytes.NewReader(snapshotBytes(t, f))}); err != nil {
		t.Fatal(err)
	}
	if l := g.IngressesWithKeys(); len(l) != 1 || l[0].TLS[0].Key != testKey || l[0].TLS[0].KeySHA256 != api.KeyDigest(testKey) {
		t.Fatalf("restored ingresses %+v", l)
	}
	// The restored index still refuses the route.
	err, _ := applyAt(t, g, g.Index()+1, &CreateIngress{Ingress: ing("b", "shop.example.com", "/api")}).(error)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "ingress default/a") {
		t.Errorf("restored claims: %v", err)
	}
	// A version 4 snapshot (before ingresses) restores with none.
	v4 := `{"version":4,"index":7,"deployments":[],"pods":[],"nodes":[],"services":[]}`
	if err := g.Restore(readCloser{strings.NewReader(v4)}); err != nil {
		t.Fatal(err)
	}
	if l := g.Ingresses(""); len(l) != 0 || g.IngressesChanged() != 7 {
		t.Errorf("after a version 4 snapshot: %+v, changed at %d", l, g.IngressesChanged())
	}
	applyAll(t, g, &CreateIngress{Ingress: ing("b", "shop.example.com", "/api")})
}

// The key never reaches a log line or an error of the state machine, even
// for an entry it skips.
func TestIngressKeyNotLogged(t *testing.T) {
	h := &recordingHandler{}
	f := NewFSM(slog.New(h))
	bad := withTLS(ing("a", "shop.example.com", "/api"), testKey, "shop.example.com")
	bad.TLS[0].Hosts = append(bad.TLS[0].Hosts, "NOT A HOST")
	var answers []string
	for _, c := range []Command{
		&CreateIngress{Ingress: bad},
		&CreateIngress{Ingress: withTLS(ing("a", "shop.example.com", "/api"), testKey, "shop.example.com")},
		&CreateIngress{Ingress: withTLS(ing("b", "shop.example.com", "/api"), testKey, "shop.example.com")},
		&UpdateIngress{Ingress: withTLS(ing("zz", "shop.example.com", "/api"), testKey, "shop.example.com")},
	} {
		if err, ok := applyAt(t, f, f.Index()+1, c).(error); ok {
			answers = append(answers, err.Error())
		}
		if err := c.Validate(); err != nil {
			answers = append(answers, err.Error())
		}
	}
	if len(answers) < 3 {
		t.Fatalf("expected errors, got %q", answers)
	}
	for _, s := range append(answers, h.records()...) {
		if strings.Contains(s, "SECRET-KEY-MATERIAL") {
			t.Errorf("the key leaked: %s", s)
		}
	}
}

// BenchmarkIngressUpdate updates one ingress of a table of 10 and of
// MaxIngresses: the conflict check looks up the ingress's own routes, so
// an apply does not grow with the table.
func BenchmarkIngressUpdate(b *testing.B) {
	for _, n := range []int{10, MaxIngresses} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			f := NewFSM(nil)
			for i := range n {
				host := "h" + strconv.Itoa(i) + ".example.com"
				in := withTLS(ing("i"+strconv.Itoa(i), host, "/"), testKey, host)
				f.ingresses[in.ID()] = in
			}
			f.rebuildIngresses(0)
			entries := make([][]byte, 2)
			for j := range entries {
				in := withTLS(ing("i1", "h1.example.com", "/v"+strconv.Itoa(j)), testKey, "h1.example.com")
				entries[j] = entry(b, &UpdateIngress{Ingress: in})
			}
			for i := 0; b.Loop(); i++ {
				if err, ok := applyRaw(f, uint64(i+1), entries[i%2]).(error); ok {
					b.Fatal(err)
				}
			}
		})
	}
}
