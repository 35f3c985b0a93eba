package proxy

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// hopByHopHeaders are meaningful for one connection only and are not
// forwarded (RFC 9110 section 7.6.1, plus the non-standard Keep-Alive and
// Proxy-Connection that clients still send). Transfer-Encoding and the
// connection's keep-alive state are framing, which fasthttp sets on each side
// itself.
var hopByHopHeaders = []string{
	"Connection",
	"Keep-Alive",
	"Proxy-Connection",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"TE",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

const requestIDHeader = "X-Request-Id"

// prepareUpstreamRequest turns the client's request, in place, into the one
// sent upstream. It returns whether the client asked to close its
// connection, which restoreClientRequest puts back for the server.
func prepareUpstreamRequest(h *fasthttp.RequestHeader, requestID string) (clientClose bool) {
	clientClose = h.ConnectionClose()
	removeConnectionTokens(h.Peek("Connection"), h.Del)
	for _, name := range hopByHopHeaders {
		h.Del(name)
	}
	// The proxy has read the whole body already; the upstream must not wait
	// for a go-ahead that nobody will send.
	h.Del("Expect")
	h.ResetConnectionClose()
	h.Set(requestIDHeader, requestID)
	return clientClose
}

func restoreClientRequest(h *fasthttp.RequestHeader, clientClose bool) {
	if clientClose {
		h.SetConnectionClose()
	}
}

// copyResponseHeader copies the upstream's status and headers to the
// client's response, without hop-by-hop headers.
func copyResponseHeader(dst, src *fasthttp.ResponseHeader, requestID string) {
	src.CopyTo(dst)
	removeConnectionTokens(src.Peek("Connection"), dst.Del)
	for _, name := range hopByHopHeaders {
		dst.Del(name)
	}
	dst.ResetConnectionClose()
	dst.Set(requestIDHeader, requestID)
}

// removeConnectionTokens deletes the headers that a Connection header value
// lists as hop-by-hop ("Connection: keep-alive, X-Foo").
func removeConnectionTokens(value []byte, del func(string)) {
	for len(value) > 0 {
		var tok []byte
		if i := bytes.IndexByte(value, ','); i >= 0 {
			tok, value = value[:i], value[i+1:]
		} else {
			tok, value = value, nil
		}
		tok = bytes.TrimSpace(tok)
		if len(tok) == 0 || bytes.EqualFold(tok, []byte("close")) || bytes.EqualFold(tok, []byte("keep-alive")) {
			continue
		}
		del(string(tok))
	}
}
