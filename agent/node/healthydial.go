package node

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"time"
)

// HealthyDial is a Config.Dial for nodes whose pod IPs lead nowhere, such
// as simulated ones running runtime.Fake: every connection succeeds at
// once, in memory, and every HTTP request on it is answered 200 OK, so
// every HTTP and TCP probe passes (exec probes are the runtime's).
func HealthyDial(ctx context.Context, _, _ string) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	client, server := net.Pipe()
	go answerOK(server)
	return client, nil
}

// answerOK answers one HTTP request on c, or returns when the client
// closes c (a TCP probe) or after a bound.
func answerOK(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return
	}
	req.Body.Close()
	_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
}
