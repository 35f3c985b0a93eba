package fakevllm

import (
	"crypto/sha256"
	"crypto/subtle"
	"strings"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
)

// vLLM started with --api-key (or VLLM_API_KEY) installs an authentication
// middleware in front of every route (docs/vllm-wire-format.md,
// "Authentication"). The fake reproduces it when Config.APIKeys is set:
//
//   - Requests whose path starts with one of guardedPrefixes need
//     "Authorization: Bearer KEY" with one of the keys; every other path
//     (/health, /version, /metrics) is open. The test is a plain string
//     prefix, so "/v1foo" is guarded too, and an unknown /v1 path is
//     answered 401 before it is answered 404.
//   - OPTIONS requests are never checked (CORS preflights).
//   - The header is the first Authorization header; it is split at its
//     first space, the part before must be "bearer" in any case, and the
//     part after is compared, whole, with each key. Starlette decodes header
//     bytes as Latin-1 and vLLM hashes the UTF-8 encoding of both sides, so
//     a key with non-ASCII characters matches only a header that carries it
//     in Latin-1.
//   - A refusal is status 401 with the body {"error":"Unauthorized"}
//     (Starlette's JSONResponse: Content-Type application/json, no
//     WWW-Authenticate), and the request goes no further: no route, no
//     test hook.
var guardedPrefixes = []string{"/v1", "/v2", "/inference", "/cohere"}

// unauthorizedBody is what vLLM's middleware answers a refused request.
const unauthorizedBody = `{"error":"Unauthorized"}`

// apiKeyHashes returns the SHA-256 of each non-empty key: vLLM drops empty
// keys (an empty VLLM_API_KEY turns authentication off) and compares
// digests in constant time.
func apiKeyHashes(keys []string) [][sha256.Size]byte {
	var hs [][sha256.Size]byte
	for _, k := range keys {
		if k != "" {
			hs = append(hs, sha256.Sum256([]byte(k)))
		}
	}
	return hs
}

// authorize answers 401 and returns false when the fake requires a key
// and ctx's request does not carry one of them on a guarded path.
func (s *Server) authorize(ctx *fasthttp.RequestCtx) bool {
	if len(s.keyHashes) == 0 || ctx.IsOptions() || !isGuarded(requestPath(ctx)) {
		return true
	}
	if s.validToken(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)) {
		return true
	}
	s.unauthorized.Add(1)
	ctx.SetStatusCode(fasthttp.StatusUnauthorized)
	ctx.SetContentType("application/json")
	ctx.SetBodyString(unauthorizedBody)
	return false
}

// validToken is vLLM's verify_token on the value of the Authorization
// header.
func (s *Server) validToken(header []byte) bool {
	if len(header) == 0 {
		return false
	}
	scheme, param, _ := strings.Cut(string(header), " ")
	if !strings.EqualFold(scheme, "bearer") || !isASCII(scheme) {
		return false
	}
	h := sha256.Sum256(latin1ToUTF8(param))
	match := 0
	for _, k := range s.keyHashes {
		match |= subtle.ConstantTimeCompare(h[:], k[:])
	}
	return match == 1
}

func isGuarded(path string) bool {
	for _, p := range guardedPrefixes {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// requestPath is the path the middleware sees: uvicorn's scope["path"],
// the request target before "?", percent-decoded, and not normalized (so
// "/v1/../health" is under /v1). fasthttp's Path() is normalized, and would
// let such a path past the check.
func requestPath(ctx *fasthttp.RequestCtx) string {
	raw := ctx.Request.Header.RequestURI()
	if i := strings.IndexAny(string(raw), "?#"); i >= 0 {
		raw = raw[:i]
	}
	return unquote(string(raw))
}

// unquote is Python's urllib.parse.unquote: %XX sequences become bytes,
// and a % not followed by two hex digits stays as it is.
func unquote(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// latin1ToUTF8 is Starlette's header.decode("latin-1") followed by vLLM's
// .encode("utf-8").
func latin1ToUTF8(s string) []byte {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		b = utf8.AppendRune(b, rune(s[i]))
	}
	return b
}
