package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Bounds of one /fetch: it runs inside a request, so it must end.
const (
	maxFetchN        = 100000
	maxFetchDuration = 5 * time.Minute
	maxFetchTimeout  = 30 * time.Second
	maxFetchInterval = 10 * time.Second
	defaultTimeout   = 2 * time.Second
	maxAnswerLen     = 120 // bytes of an answer kept as its key
	maxSamples       = 5
)

// fetchSpec is what one GET /fetch asks for:
//
//	url=URL        an http:// URL to GET, or
//	udp=HOST:PORT  a UDP address to send a datagram to ("whoami"), reading one reply
//	n=N            requests to make (default 1, or no bound with duration)
//	duration=D     keep making requests for D (a Go duration) or until n
//	interval=D     pause between two requests (default none)
//	timeout=D      bound of each request, dial included (default 2s)
//
// Every request dials a new connection (no keep-alive), so each one is
// load-balanced afresh, and resolves its host again through the pod's
// resolv.conf, as a client making fresh connections would.
type fetchSpec struct {
	URL      string
	UDP      string
	N        int
	Duration time.Duration
	Interval time.Duration
	Timeout  time.Duration
}

// tally counts an answer or a kind of failure, with the start times of the
// first and last requests that got it.
type tally struct {
	Count int       `json:"count"`
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
}

// fetchResult is /fetch's JSON answer. Answers are keyed by the trimmed
// response body (the demo's /hostname gives the answering pod's name);
// Failures by kind: "refused" (connection refused: nothing listens, or a
// service without endpoints), "timeout", "dns" (the name did not resolve),
// "reset", "http NNN" (a status other than 200) or "other".
type fetchResult struct {
	Requests  int               `json:"requests"`
	OK        int               `json:"ok"`
	Errors    int               `json:"errors"`
	Answers   map[string]*tally `json:"answers"`
	Failures  map[string]*tally `json:"failures"`
	Samples   []string          `json:"error_samples,omitempty"`
	Started   time.Time         `json:"started"`
	TookMS    float64           `json:"took_ms"`
	SlowestMS float64           `json:"slowest_ms"`
}

func parseFetch(q url.Values) (fetchSpec, error) {
	s := fetchSpec{URL: q.Get("url"), UDP: q.Get("udp"), Timeout: defaultTimeout}
	switch {
	case (s.URL == "") == (s.UDP == ""):
		return s, errors.New("give exactly one of url=http://... and udp=HOST:PORT")
	case s.URL != "":
		u, err := url.Parse(s.URL)
		if err != nil || u.Scheme != "http" || u.Host == "" {
			return s, fmt.Errorf("url %q: want http://HOST[:PORT]/PATH", s.URL)
		}
	default:
		if _, _, err := net.SplitHostPort(s.UDP); err != nil {
			return s, fmt.Errorf("udp %q: want HOST:PORT", s.UDP)
		}
	}
	dur := func(name string, max time.Duration, dst *time.Duration) error {
		v := q.Get(name)
		if v == "" {
			return nil
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > max {
			return fmt.Errorf("%s %q: want a duration from 0 to %s", name, v, max)
		}
		*dst = d
		return nil
	}
	if err := errors.Join(dur("duration", maxFetchDuration, &s.Duration), dur("interval", maxFetchInterval, &s.Interval),
		dur("timeout", maxFetchTimeout, &s.Timeout)); err != nil {
		return s, err
	}
	if s.Timeout == 0 {
		s.Timeout = defaultTimeout
	}
	switch v := q.Get("n"); {
	case v != "":
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxFetchN {
			return s, fmt.Errorf("n %q: want 1 to %d", v, maxFetchN)
		}
		s.N = n
	case s.Duration > 0:
		s.N = maxFetchN
	default:
		s.N = 1
	}
	return s, nil
}

func handleFetch(w http.ResponseWriter, r *http.Request) {
	spec, err := parseFetch(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// The server's write timeout is for ordinary answers; this one comes
	// when the requests are done, which may be minutes.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	res := fetch(r.Context(), spec)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(res)
}

// fetch makes the requests spec asks for, one after the other, until n are
// made, the duration is over or ctx ends.
func fetch(ctx context.Context, spec fetchSpec) *fetchResult {
	res := &fetchResult{Answers: map[string]*tally{}, Failures: map[string]*tally{}, Started: time.Now()}
	dialer := &net.Dialer{Timeout: spec.Timeout, Resolver: &net.Resolver{PreferGo: true}}
	client := &http.Client{
		Timeout: spec.Timeout,
		Transport: &http.Transport{
			DialContext:       dialer.DialContext,
			DisableKeepAlives: true,
		},
	}
	defer client.CloseIdleConnections()
	var end time.Time
	if spec.Duration > 0 {
		end = res.Started.Add(spec.Duration)
	}
	for i := 0; i < spec.N && ctx.Err() == nil; i++ {
		if !end.IsZero() && !time.Now().Before(end) {
			break
		}
		if i > 0 && spec.Interval > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(spec.Interval):
			}
			if ctx.Err() != nil {
				break
			}
		}
		start := time.Now()
		var answer string
		var err error
		if spec.URL != "" {
			answer, err = getOnce(ctx, client, spec.URL)
		} else {
			answer, err = udpOnce(ctx, dialer, spec.UDP, spec.Timeout)
		}
		res.SlowestMS = max(res.SlowestMS, float64(time.Since(start).Microseconds())/1000)
		res.Requests++
		if err != nil {
			if ctx.Err() != nil {
				res.Requests-- // cut short by the caller, not a failure of the target
				break
			}
			res.Errors++
			count(res.Failures, failureKind(err), start)
			if msg := err.Error(); len(res.Samples) < maxSamples && !contains(res.Samples, msg) {
				res.Samples = append(res.Samples, msg)
			}
			continue
		}
		res.OK++
		count(res.Answers, answer, start)
	}
	res.TookMS = float64(time.Since(res.Started).Microseconds()) / 1000
	return res
}

func getOnce(ctx context.Context, client *http.Client, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", httpStatusError(resp.StatusCode)
	}
	return answerKey(body), nil
}

// udpOnce sends one datagram from a new socket (a new source port: the
// service balances it afresh) and reads one reply.
func udpOnce(ctx context.Context, dialer *net.Dialer, addr string, timeout time.Duration) (string, error) {
	conn, err := dialer.DialContext(ctx, "udp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte("whoami\n")); err != nil {
		return "", err
	}
	buf := make([]byte, 512)
	n, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	return answerKey(buf[:n]), nil
}

type httpStatusError int

func (e httpStatusError) Error() string { return fmt.Sprintf("HTTP %d", int(e)) }

func answerKey(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > maxAnswerLen {
		s = s[:maxAnswerLen]
	}
	return s
}

func count(m map[string]*tally, key string, at time.Time) {
	t := m[key]
	if t == nil {
		t = &tally{First: at}
		m[key] = t
	}
	t.Count++
	t.Last = at
}

// failureKind names what went wrong, in the words a user would look for.
func failureKind(err error) string {
	var status httpStatusError
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.As(err, &status):
		return fmt.Sprintf("http %d", int(status))
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.As(err, &dnsErr):
		return "dns"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.As(err, &netErr) && netErr.Timeout(), errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	default:
		return "other"
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// lookupResult is /lookup's JSON answer: what the resolver returned, or
// its error, and how long it took.
type lookupResult struct {
	Name  string      `json:"name"`
	Type  string      `json:"type"`
	Addrs []string    `json:"addrs,omitempty"`
	SRV   []srvRecord `json:"srv,omitempty"`
	Error string      `json:"error,omitempty"`
	// NotFound is set when the resolver said the name does not exist.
	NotFound bool    `json:"not_found,omitempty"`
	TookMS   float64 `json:"took_ms"`
}

type srvRecord struct {
	Target   string `json:"target"`
	Port     uint16 `json:"port"`
	Priority uint16 `json:"priority"`
	Weight   uint16 `json:"weight"`
}

// handleLookup resolves name=N (type=A, the default, or SRV; timeout=D, 15s
// by default) with Go's resolver, which applies the pod's search path.
// The answer is 200 with the error in the JSON when the lookup failed.
func handleLookup(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	res := lookupResult{Name: q.Get("name"), Type: strings.ToUpper(q.Get("type"))}
	if res.Type == "" {
		res.Type = "A"
	}
	timeout := 15 * time.Second
	if v := q.Get("timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > time.Minute {
			http.Error(w, "timeout: want a duration up to 1m", http.StatusBadRequest)
			return
		}
		timeout = d
	}
	if res.Name == "" || (res.Type != "A" && res.Type != "SRV") {
		http.Error(w, "want name=NAME and type=A or SRV", http.StatusBadRequest)
		return
	}
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{}) // see handleFetch
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	resolver := &net.Resolver{PreferGo: true}
	start := time.Now()
	var err error
	if res.Type == "A" {
		var ips []net.IP
		ips, err = resolver.LookupIP(ctx, "ip4", res.Name)
		for _, ip := range ips {
			res.Addrs = append(res.Addrs, ip.String())
		}
	} else {
		var srvs []*net.SRV
		_, srvs, err = resolver.LookupSRV(ctx, "", "", res.Name)
		for _, s := range srvs {
			res.SRV = append(res.SRV, srvRecord{Target: s.Target, Port: s.Port, Priority: s.Priority, Weight: s.Weight})
		}
	}
	res.TookMS = float64(time.Since(start).Microseconds()) / 1000
	if err != nil {
		res.Error = err.Error()
		var dnsErr *net.DNSError
		res.NotFound = errors.As(err, &dnsErr) && dnsErr.IsNotFound
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(res)
}
