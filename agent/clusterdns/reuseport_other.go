//go:build !linux

package clusterdns

import "syscall"

const canReusePort = false

func reusePort(_, _ string, _ syscall.RawConn) error { return nil }

// msgTrunc: datagrams longer than the buffer are not detected here, but
// they fail to parse.
const msgTrunc = 0
