package api

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestAddEvent(t *testing.T) {
	now := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	ev := func(ago time.Duration, reason, msg string) Event {
		return Event{Time: now.Add(-ago), Type: EventNormal, Reason: reason, Message: msg}
	}
	tests := []struct {
		name    string
		have    []Event
		add     Event
		reasons []string // of the result, in order
		counts  []int
	}{
		{"first", nil, ev(0, "Started", "a"), []string{"Started"}, []int{0}},
		{"appended newest last", []Event{ev(time.Minute, "Scheduled", "x")}, ev(0, "Started", "a"),
			[]string{"Scheduled", "Started"}, []int{0, 0}},
		{"repeat counts up and moves to the end",
			[]Event{ev(3*time.Minute, "Started", "a"), ev(2*time.Minute, "Exited", "code 1")}, ev(0, "Started", "a"),
			[]string{"Exited", "Started"}, []int{0, 2}},
		{"same reason, other message is another event",
			[]Event{ev(time.Minute, "Exited", "code 1")}, ev(0, "Exited", "code 2"),
			[]string{"Exited", "Exited"}, []int{0, 0}},
		{"older than an hour dropped",
			[]Event{ev(61*time.Minute, "Scheduled", "x"), ev(59*time.Minute, "Started", "a")}, ev(0, "Exited", "code 1"),
			[]string{"Started", "Exited"}, []int{0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := append([]Event(nil), tt.have...)
			got := AddEvent(tt.have, tt.add, now)
			if len(got) != len(tt.reasons) {
				t.Fatalf("got %d events %+v, want %d", len(got), got, len(tt.reasons))
			}
			for i := range got {
				if got[i].Reason != tt.reasons[i] || got[i].Count != tt.counts[i] {
					t.Errorf("event %d = %s×%d, want %s×%d", i, got[i].Reason, got[i].Count, tt.reasons[i], tt.counts[i])
				}
			}
			for i := range before {
				if tt.have[i] != before[i] {
					t.Errorf("the events passed in were changed")
				}
			}
		})
	}
	t.Run("repeat keeps the first time", func(t *testing.T) {
		got := AddEvent([]Event{ev(5*time.Minute, "Started", "a")}, ev(0, "Started", "a"), now)
		got = AddEvent(got, ev(0, "Started", "a"), now)
		if e := got[0]; e.Count != 3 || !e.FirstTime.Equal(now.Add(-5*time.Minute)) || !e.Time.Equal(now) {
			t.Errorf("got %+v, want count 3 first 5 min ago, last now", e)
		}
	})
	t.Run("at most MaxEvents, the newest", func(t *testing.T) {
		var es []Event
		for i := range 3 * MaxEvents {
			es = AddEvent(es, ev(0, "Exited", "code "+string(rune('a'+i%26))+string(rune('a'+i/26))), now)
		}
		if len(es) != MaxEvents {
			t.Fatalf("kept %d events, want %d", len(es), MaxEvents)
		}
		if err := (&PodStatus{Events: es}).Validate(); err != nil {
			t.Errorf("bounded events do not validate: %v", err)
		}
	})
	t.Run("long text is cut to validate", func(t *testing.T) {
		es := AddEvent(nil, Event{Type: EventWarning, Reason: "Failed", Message: strings.Repeat("é", MaxEventMessageLen)}, now)
		if err := (&PodStatus{Events: es}).Validate(); err != nil {
			t.Errorf("got %v", err)
		}
		if es[0].Time != now {
			t.Errorf("a zero time is not set to now: %v", es[0].Time)
		}
	})
}

func TestEventValidate(t *testing.T) {
	now := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	ok := Event{Time: now, Type: EventWarning, Reason: "BackOff", Message: "back-off 10s"}
	tests := []struct {
		name  string
		edit  func(e *Event)
		field string // "" when valid
	}{
		{"valid", func(e *Event) {}, ""},
		{"repeated", func(e *Event) { e.Count, e.FirstTime = 4, now.Add(-time.Minute) }, ""},
		{"bad type", func(e *Event) { e.Type = "Error" }, "type"},
		{"empty reason", func(e *Event) { e.Reason = "" }, "reason"},
		{"reason with spaces", func(e *Event) { e.Reason = "Back Off" }, "reason"},
		{"reason too long", func(e *Event) { e.Reason = strings.Repeat("A", MaxEventReasonLen+1) }, "reason"},
		{"message too long", func(e *Event) { e.Message = strings.Repeat("x", MaxEventMessageLen+1) }, "message"},
		{"zero time", func(e *Event) { e.Time = time.Time{} }, "time"},
		{"year past JSON", func(e *Event) { e.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }, "time"},
		{"first after last", func(e *Event) { e.FirstTime = now.Add(time.Second) }, "first_time"},
		{"negative count", func(e *Event) { e.Count = -1 }, "count"},
		{"huge count", func(e *Event) { e.Count = MaxEventCount + 1 }, "count"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := ok
			tt.edit(&e)
			err := (&PodStatus{Events: []Event{e}}).Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("valid event refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "events[0]."+tt.field+":") {
				t.Fatalf("got %v, want an error naming events[0].%s", err, tt.field)
			}
		})
	}
	t.Run("too many", func(t *testing.T) {
		es := make([]Event, MaxEvents+1)
		for i := range es {
			es[i] = ok
		}
		if err := (&PodStatus{Events: es}).Validate(); err == nil || !strings.Contains(err.Error(), "events:") {
			t.Fatalf("got %v, want a refusal of %d events", err, len(es))
		}
		st := PodStatus{Events: es}
		st.Bound()
		if len(st.Events) != MaxEvents {
			t.Errorf("Bound kept %d events", len(st.Events))
		}
	})
}

func TestEventJSON(t *testing.T) {
	e := Event{Time: time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC), Type: EventNormal, Reason: "Started", Message: "Started container app"}
	b, err := json.Marshal(ObjectEvent{Object: "pod/web-1", Node: "n1", Event: e})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"object":"pod/web-1","node":"n1","time":"2026-12-01T03:00:00Z","type":"Normal","reason":"Started","message":"Started container app"}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}
