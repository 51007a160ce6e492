//go:build unix

package gateway

import (
	"errors"
	"net"
	"syscall"
)

// closedByPeer reports whether the upstream closed an idle pooled
// connection (or sent something unasked on it), looking without waiting and
// without consuming: net/http's Transport learns it from the reading
// goroutine it keeps per connection, which the fast path's client has not.
func closedByPeer(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var gone bool
	var buf [1]byte
	_ = raw.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		gone = n > 0 || (err == nil && n == 0) || (err != nil && !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR))
		return true // never wait
	})
	return gone
}
