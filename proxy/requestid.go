package proxy

// maxRequestIDLen bounds a client-chosen request id.
const maxRequestIDLen = 128

// requestIDFor returns the client's X-Request-Id if it is well formed, or a
// new UUIDv4. Well formed means 1 to 128 bytes of letters, digits and
// "-_.:/+=@": enough for UUIDs, ULIDs, vLLM's and OpenAI's ids and trace
// ids, and nothing that could break a log line, a header or a query.
func (x *exchange) requestIDFor(client []byte) string {
	if validRequestID(client) {
		start := x.strs.mark()
		x.strs.buf = append(x.strs.buf, client...)
		return x.strs.since(start)
	}
	return x.strs.newID()
}

func validRequestID(id []byte) bool {
	if len(id) == 0 || len(id) > maxRequestIDLen {
		return false
	}
	for _, c := range id {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '_', c == '.', c == ':', c == '/', c == '+', c == '=', c == '@':
		default:
			return false
		}
	}
	return true
}
