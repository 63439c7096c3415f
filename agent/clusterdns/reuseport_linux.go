package clusterdns

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// canReusePort tells whether several UDP sockets can share an address, the
// kernel spreading datagrams among them by the client's address and port.
const canReusePort = true

func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}

// msgTrunc is the recvmsg flag of a datagram longer than the buffer.
const msgTrunc = unix.MSG_TRUNC
