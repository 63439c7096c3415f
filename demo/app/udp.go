package main

import (
	"context"
	"errors"
	"net"
)

// serveUDP answers every datagram on pc with reply until ctx ends, then
// closes pc. A UDP service's tests send "whoami" and read which pod
// answered.
func serveUDP(ctx context.Context, pc net.PacketConn, reply []byte) error {
	stop := context.AfterFunc(ctx, func() { _ = pc.Close() })
	defer stop()
	buf := make([]byte, 1500)
	for {
		_, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		// A reply that cannot be sent (the client is gone) is no reason to stop.
		_, _ = pc.WriteTo(reply, from)
	}
}
