package proxy

import (
	"unsafe"

	"github.com/auditproxy/auditproxy/audit"
)

// strArenaSize fits a request's strings: event id and request id (36 bytes
// each, a client's request id up to 128), two body digests (71 for BLAKE3
// and SHA-256) and the API key id (35).
const strArenaSize = 384

// strArena hands out the strings of one request's event (its id, request
// id, body digests and API key id) from a single allocation instead of one
// allocation each.
//
// The strings are as immutable as any Go string: bytes are only ever
// appended to the buffer, never rewritten, and reset takes a fresh buffer
// for the next request rather than reusing this one, so a string that
// outlives its request (in a log record, say) keeps its bytes. If an append
// outgrows the buffer, append copies it; the strings already handed out keep
// pointing into the old array, which nothing writes to again. This is how
// strings.Builder works.
type strArena struct{ buf []byte }

// reset starts a new request: its strings go to a new buffer, allocated by
// the first mark.
func (a *strArena) reset() { a.buf = nil }

// mark returns where the next string starts. Append its bytes to a.buf,
// then take it with since.
func (a *strArena) mark() int {
	if a.buf == nil {
		a.buf = make([]byte, 0, strArenaSize)
	}
	return len(a.buf)
}

// since returns the bytes appended since mark start as a string.
func (a *strArena) since(start int) string {
	if len(a.buf) == start {
		return ""
	}
	return unsafe.String(&a.buf[start], len(a.buf)-start)
}

// newID returns a new event id (a UUIDv4).
func (a *strArena) newID() string {
	start := a.mark()
	a.buf = audit.AppendNewID(a.buf)
	return a.since(start)
}
