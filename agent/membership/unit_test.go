package membership

import (
	"bytes"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

func TestMetaEncoding(t *testing.T) {
	meta := Meta{Role: RoleServer, APIAddr: "10.0.0.1:7400", RPCAddr: "10.0.0.1:7403", RaftAddr: "10.0.0.1:7401",
		CPUMillis: 16000, MemoryMiB: 65536, Labels: map[string]string{"zone": "eu-1a"}, Version: "0.2.0"}
	b, err := meta.encode()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("encoded meta: %d bytes: %s", len(b), b)
	got, err := decodeMeta(b)
	if err != nil || !metaEqual(got, meta) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}

	tests := []struct {
		name    string
		edit    func(*Meta)
		wantErr string
	}{
		{"ok", func(*Meta) {}, ""},
		{"client", func(m *Meta) { m.Role = RoleClient }, ""},
		{"no role", func(m *Meta) { m.Role = "" }, `role "" must be`},
		{"bad role", func(m *Meta) { m.Role = "leader" }, `role "leader" must be`},
		{"negative cpu", func(m *Meta) { m.CPUMillis = -1 }, "cannot be negative"},
		{"too big", func(m *Meta) {
			m.Labels = map[string]string{}
			for i := range 40 {
				m.Labels[fmt.Sprintf("label-%02d", i)] = "some-value"
			}
		}, "more than memberlist's limit of 512"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := meta.clone()
			tt.edit(&m)
			err := m.Validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Validate() = %v, want %q", err, tt.wantErr)
			}
		})
	}
	if _, err := decodeMeta([]byte("{nope")); err == nil {
		t.Error("decodeMeta accepted garbage")
	}
}

func TestConfigValidate(t *testing.T) {
	base := func() Config {
		c := DefaultConfig()
		c.NodeName = "n1"
		c.Meta = Meta{Role: RoleClient}
		return c
	}
	tests := []struct {
		name      string
		edit      func(*Config)
		wantErr   string
		wantJoins []string
	}{
		{name: "defaults", edit: func(*Config) {}},
		{name: "no name", edit: func(c *Config) { c.NodeName = "" }, wantErr: "NodeName must be set"},
		{name: "bind host name", edit: func(c *Config) { c.BindAddr = "localhost" }, wantErr: "BindAddr"},
		{name: "bad advertise", edit: func(c *Config) { c.AdvertiseAddr = "x" }, wantErr: "AdvertiseAddr"},
		{name: "port", edit: func(c *Config) { c.BindPort = 70000 }, wantErr: "BindPort"},
		{name: "key size", edit: func(c *Config) { c.SecretKey = make([]byte, 20) }, wantErr: "16, 24 or 32 bytes"},
		{name: "meta", edit: func(c *Config) { c.Meta.Role = "" }, wantErr: "role"},
		{name: "join bad port", edit: func(c *Config) { c.RetryJoin = []string{"10.0.0.1:x"} }, wantErr: "bad port"},
		{name: "join addresses", edit: func(c *Config) {
			c.RetryJoin = []string{"10.0.0.1", "10.0.0.2:8000", "node3.lan", "fd00::1", "[fd00::2]:9000"}
		}, wantJoins: []string{"10.0.0.1:7402", "10.0.0.2:8000", "node3.lan:7402", "[fd00::1]:7402", "[fd00::2]:9000"}},
		{name: "join uses advertise port", edit: func(c *Config) {
			c.AdvertisePort = 9999
			c.RetryJoin = []string{"10.0.0.1"}
		}, wantJoins: []string{"10.0.0.1:9999"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.edit(&c)
			_, err := New(c)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("New() = %v, want %q", err, tt.wantErr)
			}
			if tt.wantJoins != nil {
				if err := c.validate(); err != nil {
					t.Fatal(err)
				}
				if strings.Join(c.RetryJoin, " ") != strings.Join(tt.wantJoins, " ") {
					t.Fatalf("RetryJoin = %v, want %v", c.RetryJoin, tt.wantJoins)
				}
			}
		})
	}
}

// Tune may change timings but not what the package relies on.
func TestTuneKeepsDelegates(t *testing.T) {
	c := DefaultConfig()
	c.NodeName, c.BindPort, c.AdvertiseAddr = "n1", 7500, "10.0.0.9"
	c.Tune = func(mc *memberlist.Config) {
		mc.ProbeInterval = time.Millisecond
		mc.Name, mc.Delegate, mc.Events = "other", nil, nil
	}
	d := &delegate{}
	mc := c.memberlistConfig(d, slog.New(slog.DiscardHandler))
	if mc.ProbeInterval != time.Millisecond || mc.Name != "n1" || mc.Delegate != d || mc.Events != d || mc.Logger == nil {
		t.Fatalf("memberlist config: %+v", mc)
	}
	if mc.AdvertisePort != 7500 || mc.SuspicionMult != memberlist.DefaultLANConfig().SuspicionMult {
		t.Fatalf("advertise port %d, suspicion mult %d", mc.AdvertisePort, mc.SuspicionMult)
	}
}

func TestLogBridge(t *testing.T) {
	tests := []struct {
		line, level, msg string
	}{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:5000", "DEBUG", "Stream connection from=127.0.0.1:5000"},
		{"[INFO] memberlist: Marking b as failed, suspect timeout reached (0 peer confirmations)", "INFO", "Marking b as failed"},
		{"[WARN] memberlist: Refuting a suspect message (from: a)", "WARN", "Refuting a suspect message"},
		{"[ERR] memberlist: Failed to send ping: write: broken pipe", "ERROR", "Failed to send ping"},
		{"[ERR] Failed to shutdown transport: x", "ERROR", "Failed to shutdown transport"},
		{"no prefix at all", "INFO", "no prefix at all"},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		l := log.New(newLogBridge(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))), "", 0)
		l.Printf("%s", tt.line)
		out := buf.String()
		if !strings.Contains(out, "level="+tt.level) || !strings.Contains(out, tt.msg) ||
			strings.Contains(out, "memberlist:") || strings.Contains(out, "[") || !strings.Contains(out, "component=memberlist") {
			t.Errorf("%q logged as %q", tt.line, out)
		}
	}
	// Below the handler's level nothing is written.
	var buf bytes.Buffer
	l := log.New(newLogBridge(slog.New(slog.NewTextHandler(&buf, nil))), "", 0)
	l.Print("[DEBUG] memberlist: noise")
	if buf.Len() != 0 {
		t.Errorf("debug line written at info level: %q", buf.String())
	}
}

// A reader that does not read holds up nothing and loses nothing.
func TestEventQueueNeverDrops(t *testing.T) {
	var logs bytes.Buffer
	q := newEventQueue(slog.New(slog.NewTextHandler(&logs, nil)))
	out := make(chan Event, 1)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { q.run(out, stop); close(done) }()

	const n = 5000
	start := time.Now()
	for i := range n {
		q.push(Event{Type: EventUpdate, Member: Member{Name: fmt.Sprint(i)}})
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("push blocked: %v for %d events", d, n)
	}
	for i := range n {
		e := <-out
		if e.Member.Name != fmt.Sprint(i) {
			t.Fatalf("event %d is %q: out of order", i, e.Member.Name)
		}
	}
	if !strings.Contains(logs.String(), "piling up") {
		t.Error("a backlog of 5000 was not logged")
	}
	close(stop)
	<-done
}

// The member table tells failed from left by leave intents.
func TestTableFailedOrLeft(t *testing.T) {
	node := func(name string) *memberlist.Node {
		b, _ := Meta{Role: RoleClient, Version: "v"}.encode()
		return &memberlist.Node{Name: name, Addr: net.IPv4(10, 0, 0, 2), Port: 7402, Meta: b}
	}
	type step struct {
		op   string // join, leave, intent, self-leaving, wait
		name string
		wait time.Duration
	}
	tests := []struct {
		name       string
		steps      []step
		wantEvents string
		wantStatus Status
	}{
		{"no intent: failed", []step{{op: "join"}, {op: "leave"}}, "join fail", StatusFailed},
		{"intent then leave: left", []step{{op: "join"}, {op: "intent"}, {op: "leave"}}, "join leave", StatusLeft},
		{"late intent: failed then left", []step{{op: "join"}, {op: "leave"}, {op: "intent"}}, "join fail leave", StatusLeft},
		{"intent too late", []step{{op: "join"}, {op: "leave"}, {op: "wait", wait: time.Minute}, {op: "intent"}, {op: "join"}, {op: "leave"}}, "join fail join fail", StatusFailed},
		{"stale intent", []step{{op: "join"}, {op: "intent"}, {op: "wait", wait: time.Minute}, {op: "leave"}}, "join fail", StatusFailed},
		{"rejoin forgets intent", []step{{op: "join"}, {op: "intent"}, {op: "join"}, {op: "leave"}}, "join join fail", StatusFailed},
		{"left then back", []step{{op: "join"}, {op: "intent"}, {op: "leave"}, {op: "join"}}, "join leave join", StatusAlive},
		{"self leaving", []step{{op: "join", name: "self"}, {op: "self-leaving"}, {op: "leave", name: "self"}}, "join leave", StatusLeft},
		{"tombstone", []step{{op: "join"}, {op: "leave"}, {op: "wait", wait: 25 * time.Hour}}, "join fail", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var events []string
			tb := newTable("self", DefaultTombstoneTimeout, nil, slog.New(slog.DiscardHandler), func(e Event) {
				events = append(events, e.Type.String())
			})
			now := time.Unix(1_000_000, 0)
			tb.now = func() time.Time { return now }
			name := "peer"
			for _, s := range tt.steps {
				n := name
				if s.name != "" {
					n = s.name
				}
				switch s.op {
				case "join":
					tb.join(node(n))
				case "leave":
					tb.leave(node(n))
				case "intent":
					(&delegate{table: tb}).NotifyMsg(append([]byte{msgLeaveIntent}, n...))
				case "self-leaving":
					tb.setLeaving()
				case "wait":
					now = now.Add(s.wait)
				}
				now = now.Add(10 * time.Millisecond)
			}
			if got := strings.Join(events, " "); got != tt.wantEvents {
				t.Errorf("events %q, want %q", got, tt.wantEvents)
			}
			var got Status
			for _, m := range tb.list() {
				if m.Name == name || m.Name == "self" {
					got = m.Status
					if m.Meta.Role != RoleClient || m.Addr.String() != "10.0.0.2" {
						t.Errorf("member %+v", m)
					}
				}
			}
			if got != tt.wantStatus {
				t.Errorf("status %v, want %v", got, tt.wantStatus)
			}
		})
	}
}

// listWhere copies only what it keeps, and still leaves out expired
// tombstones that prune (at most once a minute) has not removed yet.
func TestTableListWhere(t *testing.T) {
	node := func(name, role string) *memberlist.Node {
		b, _ := Meta{Role: role, Version: "v"}.encode()
		return &memberlist.Node{Name: name, Addr: net.IPv4(10, 0, 0, 2), Port: 7402, Meta: b}
	}
	now := time.Unix(1000, 0)
	tb := newTable("self", time.Hour, nil, slog.New(slog.DiscardHandler), func(Event) {})
	tb.now = func() time.Time { return now }
	tb.join(node("s1", RoleServer))
	tb.join(node("s2", RoleServer))
	tb.join(node("c1", RoleClient))
	tb.leave(node("s2", RoleServer)) // failed: a tombstone
	servers := func() []string {
		var names []string
		for _, m := range tb.listWhere(func(m *Member) bool { return m.Meta.Role == RoleServer }) {
			names = append(names, m.Name+":"+m.Status.String())
		}
		return names
	}
	if got, want := servers(), []string{"s1:alive", "s2:failed"}; !slices.Equal(got, want) {
		t.Fatalf("servers %v, want %v", got, want)
	}
	now = now.Add(2 * time.Hour) // past the tombstone timeout
	if got, want := servers(), []string{"s1:alive"}; !slices.Equal(got, want) {
		t.Fatalf("servers after the tombstone timeout %v, want %v", got, want)
	}
	if n := len(tb.list()); n != 2 {
		t.Errorf("list has %d members, want s1 and c1", n)
	}
}
