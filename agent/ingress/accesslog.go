package ingress

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/flotilla-io/flotilla/api"
)

// accessLog receives nginx's access log lines (syslog datagrams on a
// loopback UDP port: nginx's workers run as nobody, who may not reach a
// socket under the agent's data directory), counts them in the metrics and
// passes them to a logger. A local process could send it lines too; the
// worst it can do is skew the request metrics.
type accessLog struct {
	conn     *net.UDPConn
	log      *slog.Logger // nil: lines are counted, not logged
	requests *prometheus.HistogramVec
	// known are the ingresses of the configuration in force: a line naming
	// another (a forged datagram) counts as "-", so no sender can grow the
	// metric's label values beyond the cluster's ingresses.
	known atomic.Pointer[map[string]bool]
}

// setKnown records the ingresses a new configuration serves.
func (a *accessLog) setKnown(ins []api.Ingress) {
	m := make(map[string]bool, len(ins))
	for i := range ins {
		m[ins[i].ID()] = true
	}
	a.known.Store(&m)
}

// latencyBuckets span a fast local backend to a slow upload (seconds).
var latencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

func newAccessLog(log *slog.Logger) (*accessLog, error) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("ingress: listen for the access log on loopback: %w", err)
	}
	// Room for the datagrams a pause (readPause) and a slow moment let
	// gather: 4 MiB, past net.core.rmem_max (208 KiB on a stock kernel)
	// where the agent may (root: SO_RCVBUFFORCE).
	if rc, err := conn.SyscallConn(); err == nil {
		var serr error
		_ = rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20) })
		if serr != nil {
			conn.SetReadBuffer(4 << 20)
		}
	}
	return &accessLog{
		conn: conn,
		log:  log,
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flotilla_ingress_request_duration_seconds",
			Help:    "Requests through this node's ingress, by ingress (namespace/name; - when no rule matched) and status, and how long nginx took to answer them.",
			Buckets: latencyBuckets,
		}, []string{"ingress", "status"}),
	}, nil
}

func (a *accessLog) addr() string { return a.conn.LocalAddr().String() }

// run reads until ctx ends, up to readBatch datagrams per system call
// (recvmmsg), and pauses readPause once it has caught up, so that under
// load datagrams wait in the socket in dozens rather than waking the
// reader one by one. Measured with the ingress benchmark: the reader
// costs ~5 µs of CPU per request, most of it formatting the log line.
func (a *accessLog) run(ctx context.Context) {
	go func() { <-ctx.Done(); a.conn.Close() }()
	pc := ipv4.NewPacketConn(a.conn)
	msgs := make([]ipv4.Message, readBatch)
	for i := range msgs {
		// nginx's syslog lines stop at 2 KiB (NGX_SYSLOG_MAX_STR); a
		// longer datagram is cut and then refused by line.
		msgs[i].Buffers = [][]byte{make([]byte, 4<<10)}
	}
	pause := time.NewTimer(0)
	defer pause.Stop()
	for {
		n, err := pc.ReadBatch(msgs, 0)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			continue
		}
		for i := range n {
			a.line(msgs[i].Buffers[0][:msgs[i].N])
		}
		if n < readBatch {
			pause.Reset(readPause)
			select {
			case <-ctx.Done():
				return
			case <-pause.C:
			}
		}
	}
}

// readBatch is how many datagrams run takes per read; readPause how long
// it lets them gather once caught up (at 40,000 requests/s, 80 of them:
// well inside the socket's buffer, see newAccessLog).
const (
	readBatch = 128
	readPause = 2 * time.Millisecond
)

// Fields of the flotilla log_format, in order.
const (
	fIngress = iota
	fStatus
	fTime
	fMethod
	fScheme
	fHost
	fURI
	fRemote
	fUpstream
	fUpstreamStatus
	fBytes
	fProto
	nFields
)

// line handles one datagram: "<pri>Mon dd hh:mm:ss flotilla: f1\tf2...".
func (a *accessLog) line(b []byte) {
	i := bytes.Index(b, []byte("flotilla: "))
	if i < 0 {
		return
	}
	f := strings.Split(string(b[i+len("flotilla: "):]), "\t")
	if len(f) != nFields {
		return
	}
	status := f[fStatus]
	if len(status) != 3 || strings.Trim(status, "0123456789") != "" {
		return
	}
	ingress := f[fIngress]
	if known := a.known.Load(); known == nil || !(*known)[ingress] {
		ingress = "-"
	}
	secs, _ := strconv.ParseFloat(f[fTime], 64)
	a.requests.WithLabelValues(ingress, status).Observe(secs)
	if a.log != nil {
		a.log.LogAttrs(context.Background(), slog.LevelInfo, "request", slog.String("ingress", ingress), slog.String("status", status),
			slog.String("seconds", f[fTime]), slog.String("method", f[fMethod]), slog.String("scheme", f[fScheme]),
			slog.String("host", f[fHost]), slog.String("path", f[fURI]), slog.String("client", f[fRemote]),
			slog.String("upstream", f[fUpstream]), slog.String("upstream_status", f[fUpstreamStatus]),
			slog.String("bytes", f[fBytes]), slog.String("proto", f[fProto]))
	}
}
