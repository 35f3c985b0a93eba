// Package forwardrecv is a receiver for the Fluentd forward protocol, v1
// (https://github.com/fluent/fluentd/wiki/Forward-Protocol-Specification-v1),
// written to be the aggregator peer in tests and benchmarks of auditproxy's
// shipper (package forward), and the demo's aggregator. It owns its own msgpack decoder, and the few bytes of encoder an
// ack needs, and imports no msgpack or Fluentd library, so that it checks a
// sender independently of the code the sender was built with.
//
// A Receiver listens on TCP, or TLS, accepts frames in all four modes
// (Message, Forward, PackedForward, CompressedPackedForward with gzip),
// stores every entry in arrival order and answers the "chunk" option with an
// ack. Its Mode makes it misbehave on purpose (withhold acks, or drop the
// connection) so that tests can watch the sender retry. What it refuses:
// anything that is not well-formed msgpack, a frame that is not one of the
// modes, an option "size" that does not match the number of entries, a
// record that is not a map with str keys, duplicate map keys, and frames over
// the limits below (MaxFrameSize). A refused frame counts as an error in
// Stats and closes its connection, as Fluentd does; nothing of it is stored.
//
// Not implemented: the handshake phase (HELO/PING/PONG, shared_key), UDP
// heartbeats and JSON-encoded frames.
package forwardrecv

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is what the receiver does with a message whose option carries a
// "chunk", that is, one whose sender waits for an ack. Messages without a
// chunk are stored, and never answered, whatever the mode.
type Mode int

const (
	// Ack stores the message's entries, then replies {"ack": chunk}.
	Ack Mode = iota
	// WithholdAck stores the message's entries and never replies, so the
	// sender's wait for the ack must time out.
	WithholdAck
	// DropConn closes the connection as soon as the message has been read,
	// storing nothing of it.
	DropConn
)

func (m Mode) String() string {
	switch m {
	case Ack:
		return "Ack"
	case WithholdAck:
		return "WithholdAck"
	case DropConn:
		return "DropConn"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Entry is one event the receiver accepted.
type Entry struct {
	Tag string
	// Time is the entry's time in UTC: whole seconds for an integer time,
	// to the nanosecond for an EventTime.
	Time time.Time
	// Record is the entry's record. Its values are nil, bool, int64 (uint64
	// for integers above math.MaxInt64), float64 (float32 widened), string,
	// []byte (msgpack bin), []any, map[string]any or Ext. It is shared
	// between every caller of Entries: do not modify it.
	Record map[string]any
	// Conn numbers the connection the entry came on: 1 for the first the
	// receiver accepted, 2 for the next, and so on.
	Conn int
}

// Config configures a Receiver. The zero value is a plain TCP receiver that
// keeps every entry.
type Config struct {
	// TLS, when not nil, makes the receiver a TLS server with this
	// configuration (it needs at least a certificate). nil: plain TCP.
	TLS *tls.Config
	// OnEntry, when not nil, is called with each accepted entry, on the
	// connection's goroutine (so concurrently for different connections),
	// before the message's ack is sent. It must not block: Close waits for
	// it.
	OnEntry func(Entry)
	// Discard counts accepted entries without keeping them, for long runs:
	// Len, WaitFor and Stats work as usual, Entries returns nil.
	Discard bool
}

// Stats counts what a receiver has done since Start.
type Stats struct {
	Connections int64 // connections accepted
	Open        int64 // connections open now
	Messages    int64 // frames read and accepted as well-formed, whatever the mode then did with them
	Entries     int64 // entries accepted (stored, or counted when Config.Discard)
	Bytes       int64 // bytes of the frames counted in Messages
	Acks        int64 // ack replies written (counted as the write starts: a sender holding its ack finds it counted)
	Withheld    int64 // acks not sent because the mode was WithholdAck
	Dropped     int64 // connections closed on a message because the mode was DropConn
	// Errors counts frames refused as malformed or against the protocol,
	// frames cut short by the peer, and failed TLS handshakes; each closed
	// its connection. LastError describes the latest.
	Errors    int64
	LastError string
}

// Receiver is a forward-protocol server started by Start. Its methods may be
// called from any goroutine.
type Receiver struct {
	cfg  Config
	ln   net.Listener
	mode atomic.Int32
	wg   sync.WaitGroup // the accept loop and every connection's goroutine

	mu      sync.Mutex
	closed  bool
	conns   map[net.Conn]struct{}
	nconns  int
	entries []Entry
	n       int           // entries accepted
	changed chan struct{} // closed, and replaced, when n grows or the receiver closes
	stats   Stats
}

// Start listens on addr ("127.0.0.1:0" picks a free port; Addr tells which)
// and serves connections in the background until Close. The receiver starts
// in Ack mode. Starting on the address of a receiver that has been closed
// works: Close releases the port before it returns, and the listening socket
// has SO_REUSEADDR (Go's default), so connections it left in TIME_WAIT do not
// block the new one.
func Start(addr string, cfg Config) (*Receiver, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("forwardrecv: %w", err)
	}
	r := &Receiver{cfg: cfg, ln: ln, conns: map[net.Conn]struct{}{}, changed: make(chan struct{})}
	r.wg.Add(1)
	go r.accept()
	return r, nil
}

// Addr is the address the receiver listens on, as host:port.
func (r *Receiver) Addr() string { return r.ln.Addr().String() }

// SetMode sets what the receiver does with the messages that ask for an ack
// from now on, on every connection.
func (r *Receiver) SetMode(m Mode) { r.mode.Store(int32(m)) }

// Entries returns a copy of the stored entries, in the order their messages
// were accepted (entries of one message in their order within it). It
// returns nil when Config.Discard is set.
func (r *Receiver) Entries() []Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.entries)
}

// Len is the number of entries accepted so far.
func (r *Receiver) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// WaitFor waits until Len() >= n and reports whether that happened before
// the timeout ran out, or the receiver was closed.
func (r *Receiver) WaitFor(n int, timeout time.Duration) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		r.mu.Lock()
		done, closed, ch := r.n >= n, r.closed, r.changed
		r.mu.Unlock()
		if done || closed {
			return done
		}
		select {
		case <-ch:
		case <-t.C:
			return r.Len() >= n
		}
	}
}

// Stats returns the receiver's counters.
func (r *Receiver) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Close stops listening, closes every connection and waits for the
// receiver's goroutines to end, so that the port is free when it returns.
// Entries, Len and Stats keep working after it. Closing twice is harmless.
func (r *Receiver) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	close(r.changed)
	conns := make([]net.Conn, 0, len(r.conns))
	for c := range r.conns {
		conns = append(conns, c)
	}
	r.mu.Unlock()

	err := r.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	r.wg.Wait()
	if err != nil {
		return fmt.Errorf("forwardrecv: %w", err)
	}
	return nil
}

func (r *Receiver) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

func (r *Receiver) accept() {
	defer r.wg.Done()
	var delay time.Duration
	for {
		c, err := r.ln.Accept()
		if err != nil {
			if r.isClosed() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors or the like: back off and retry,
			// as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			time.Sleep(delay)
			continue
		}
		delay = 0
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			c.Close()
			return
		}
		r.nconns++
		id := r.nconns
		r.conns[c] = struct{}{}
		r.stats.Connections++
		r.stats.Open++
		r.wg.Add(1) // before Close can Wait: it needs r.mu to set closed
		r.mu.Unlock()
		go r.serve(c, id)
	}
}

// serve reads frames from the connection raw, number id, until it ends or
// misbehaves.
func (r *Receiver) serve(raw net.Conn, id int) {
	defer func() {
		raw.Close()
		r.mu.Lock()
		delete(r.conns, raw)
		r.stats.Open--
		r.mu.Unlock()
		r.wg.Done()
	}()
	conn := raw
	if r.cfg.TLS != nil {
		tc := tls.Server(raw, r.cfg.TLS)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			r.fail(fmt.Errorf("conn %d: forwardrecv: TLS handshake: %w", id, err))
			return
		}
		conn = tc
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	var reply []byte
	for {
		// Between frames, the connection ending in any way (EOF, reset,
		// Close) is the peer's or Close's doing, not an error.
		if _, err := br.Peek(1); err != nil {
			return
		}
		f, err := readFrame(br)
		if err != nil {
			r.fail(fmt.Errorf("conn %d: %w", id, err))
			return
		}
		mode := Mode(r.mode.Load())
		r.mu.Lock()
		r.stats.Messages++
		r.stats.Bytes += int64(f.size)
		if f.hasChunk {
			switch mode {
			case DropConn:
				r.stats.Dropped++
			case WithholdAck:
				r.stats.Withheld++
			}
		}
		r.mu.Unlock()
		if f.hasChunk && mode == DropConn {
			return
		}
		r.store(f, id)
		if !f.hasChunk || mode == WithholdAck {
			continue
		}
		// Count the ack before writing it, so that a sender that has
		// its ack finds it counted.
		r.mu.Lock()
		r.stats.Acks++
		r.mu.Unlock()
		reply = appendAck(reply[:0], f.chunk)
		conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write(reply); err != nil {
			// The peer is gone or not reading: it gets no ack.
			r.mu.Lock()
			r.stats.Acks--
			r.mu.Unlock()
			return
		}
	}
}

// fail counts err, unless the receiver is closing (its own closing of the
// connection is what err reports then).
func (r *Receiver) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.stats.Errors++
	r.stats.LastError = err.Error()
}

func (r *Receiver) store(f *frame, conn int) {
	if r.cfg.OnEntry != nil {
		for _, ev := range f.entries {
			r.cfg.OnEntry(Entry{Tag: f.tag, Time: ev.time, Record: ev.record, Conn: conn})
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.cfg.Discard {
		for _, ev := range f.entries {
			r.entries = append(r.entries, Entry{Tag: f.tag, Time: ev.time, Record: ev.record, Conn: conn})
		}
	}
	r.n += len(f.entries)
	r.stats.Entries += int64(len(f.entries))
	if !r.closed {
		close(r.changed)
		r.changed = make(chan struct{})
	}
}
