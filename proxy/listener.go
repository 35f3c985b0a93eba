package proxy

import (
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// clientListener is the proxy's listener. It keeps the process serving when
// it runs out of file descriptors, and keeps it from running out:
//
//   - Accept errors that say the process or the system is out of a resource
//     (EMFILE, ENFILE, ENOBUFS, ENOMEM) are retried after a pause that grows
//     from 5 ms to 1 s, as net/http does, instead of ending Serve: fasthttp
//     returns such errors as permanent, and a proxy that returns from Serve
//     drops every stream in flight.
//   - At most maxConns client connections are open at once. Each may hold an
//     upstream connection too, so the cap is set below half the descriptor
//     limit (see DefaultMaxClientConns). A connection over the cap is
//     answered 503 with an OpenAI error and closed, rather than left
//     waiting: its client learns at once that it should retry.
//   - Accepted connections get an idle write timeout (idleConn). Reads are
//     left to fasthttp's ReadTimeout and IdleTimeout, which bound reading a
//     request and waiting for the next one.
type clientListener struct {
	net.Listener
	writeIdle time.Duration
	maxConns  int64
	log       *slog.Logger
	m         *Metrics
	lastLog   atomic.Int64 // Unix ns of the last accept error logged
}

// DescriptorLimit returns the process's soft limit on open files (Go raises
// it to the hard limit at start), or 0 if it cannot be read.
func DescriptorLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return rl.Cur
}

func (l *clientListener) Accept() (net.Conn, error) {
	var pause time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			reason, retry := acceptErrorReason(err)
			if !retry {
				return nil, err
			}
			l.m.acceptErrors.WithLabelValues(reason).Inc()
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			if now := time.Now().UnixNano(); now-l.lastLog.Load() > int64(10*time.Second) {
				l.lastLog.Store(now)
				l.log.Error("cannot accept client connections; retrying (auditproxy_accept_errors_total counts each failure)",
					"reason", reason, "err", err, "open_connections", l.m.clientConns.Load(), "max_connections", l.maxConns)
			}
			time.Sleep(pause)
			continue
		}
		pause = 0
		if l.m.clientConns.Add(1) > l.maxConns {
			l.m.clientConns.Add(-1)
			l.m.connsRejected.Inc()
			refuseConnection(c)
			continue
		}
		return &idleConn{Conn: c, writeIdle: l.writeIdle, onClose: l.closed}, nil
	}
}

func (l *clientListener) closed() { l.m.clientConns.Add(-1) }

// acceptErrorReason names an accept error that a pause may cure.
func acceptErrorReason(err error) (reason string, retry bool) {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return "", false
	}
	switch errno {
	case syscall.EMFILE:
		return "emfile", true
	case syscall.ENFILE:
		return "enfile", true
	case syscall.ENOBUFS, syscall.ENOMEM:
		return "enomem", true
	case syscall.ECONNABORTED:
		return "econnaborted", true
	}
	return "", false
}

// tooManyConnections is the whole answer to a connection over the cap.
var tooManyConnections = func() []byte {
	body := errTooManyConnections.appendJSON(nil)
	head := "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: "
	return append([]byte(head+strconv.Itoa(len(body))+"\r\n\r\n"), body...)
}()

// refuseConnection answers c with tooManyConnections and closes it. The
// answer fits any socket buffer, so the write does not block; closing only
// the sending side first, and the socket a moment later, lets a client
// still sending its request read the answer instead of a reset.
func refuseConnection(c net.Conn) {
	_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = c.Write(tooManyConnections)
	if tc, ok := c.(interface{ CloseWrite() error }); ok {
		_ = tc.CloseWrite()
		time.AfterFunc(200*time.Millisecond, func() { c.Close() })
		return
	}
	c.Close()
}

// DefaultMaxClientConns is the client connection cap for a descriptor limit
// of nofile: each client connection may hold an upstream one, and the spool,
// the listeners and the shipper need a few more.
func DefaultMaxClientConns(nofile uint64) int {
	const reserve = 128
	if nofile < 2*64+reserve {
		return 64
	}
	return int(min((nofile-reserve)/2, 1<<20))
}
