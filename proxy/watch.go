package proxy

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// A client that goes away while vLLM works on its request must not leave
// the generation running: vLLM aborts a request when its connection closes,
// so the proxy closes the upstream connection. While the answer streams, a
// write to the client fails within one chunk of its leaving. Before the
// answer begins (a non-streamed generation, which sends nothing until it is
// complete, or a stream still queued or in prefill) nothing is written, and
// fasthttp offers no callback: the proxy watches the client's socket itself.
//
// The watch starts clientWatchDelay after the request was read, so that the
// many short requests pay only for arming a timer, and polls the socket
// through the runtime's network poller: when it becomes readable, a
// MSG_PEEK tells the end of the connection (a read of 0 bytes, or a reset)
// from bytes of a next request, after which hang-ups cannot be told apart
// and the watch ends. A client that only shuts down its sending side after
// its request (an HTTP/1.0 habit) looks the same as one that left, as it
// does to nginx (proxy_ignore_client_abort off).
const clientWatchDelay = 50 * time.Millisecond

// clientWatch watches one exchange's client connection.
type clientWatch struct {
	x     *exchange
	timer *time.Timer
	mu    sync.Mutex
	conn  syscall.Conn // the client's socket; nil when not watched
	tcp   interface{ SetReadDeadline(time.Time) error }
	state watchState
	done  chan struct{} // closed when a running watch returns
}

type watchState int

const (
	watchIdle     watchState = iota
	watchArmed               // the timer is set
	watchRunning             // polling the socket
	watchStopping            // stop waits for the poll to return
)

// start arms the watch of conn, the client connection fasthttp serves x on.
// Connections without a socket (in-memory listeners in tests) are not
// watched.
func (w *clientWatch) start(conn net.Conn) {
	if ic, ok := conn.(*idleConn); ok {
		conn = ic.Conn
	}
	sc, ok := conn.(interface {
		syscall.Conn
		SetReadDeadline(time.Time) error
	})
	if !ok {
		return
	}
	w.mu.Lock()
	w.conn, w.tcp, w.state = sc, sc, watchArmed
	if w.timer == nil {
		w.timer = time.AfterFunc(clientWatchDelay, w.run)
	} else {
		w.timer.Reset(clientWatchDelay)
	}
	w.mu.Unlock()
}

// stop ends the watch and returns once it no longer touches the socket, so
// that fasthttp can read the connection's next request. It may be called
// when no watch was started.
func (w *clientWatch) stop() {
	w.mu.Lock()
	switch w.state {
	case watchArmed:
		w.timer.Stop()
		// If the timer fired already, run sees watchIdle and returns.
	case watchRunning:
		w.state = watchStopping
		done, tcp := w.done, w.tcp
		// Under mu, so that run cannot clear it after this.
		_ = tcp.SetReadDeadline(time.Unix(1, 0)) // wakes the poll
		w.mu.Unlock()
		<-done
		_ = tcp.SetReadDeadline(time.Time{})
		w.mu.Lock()
	}
	w.state, w.conn, w.tcp = watchIdle, nil, nil
	w.mu.Unlock()
}

// run polls the socket until the client hangs up, sends more bytes, or stop.
func (w *clientWatch) run() {
	w.mu.Lock()
	if w.state != watchArmed {
		w.mu.Unlock()
		return
	}
	w.state = watchRunning
	w.done = make(chan struct{})
	conn, done := w.conn, w.done
	// fasthttp's deadline for reading the request (ClientIdleTimeout from
	// its first byte) is still set, and would end the watch in the middle
	// of a long generation. The request has been read; fasthttp sets its
	// deadlines again before reading the next one.
	_ = w.tcp.SetReadDeadline(time.Time{})
	w.mu.Unlock()
	defer close(done)

	raw, err := conn.SyscallConn()
	if err != nil {
		return
	}
	hangUp := false
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EINTR):
			return false // nothing yet: wait until the socket is readable
		case err != nil: // a reset
			hangUp = true
		case n == 0: // the end of the stream
			hangUp = true
		}
		return true
	})
	if err == nil && hangUp {
		w.x.clientGone()
	}
}
