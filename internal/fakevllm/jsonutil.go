package fakevllm

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"strconv"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// appendHexID appends 32 random hex digits, the shape of Python's
// uuid.uuid4().hex that vLLM's random_uuid() returns.
func appendHexID(b []byte) []byte {
	for range 2 {
		x := rand.Uint64()
		for shift := 60; shift >= 0; shift -= 4 {
			b = append(b, hexDigits[(x>>uint(shift))&15])
		}
	}
	return b
}

// appendJSONString appends s as a JSON string literal. Non-ASCII text stays
// raw UTF-8 as pydantic and Starlette write it; invalid UTF-8 becomes U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, s[start:i]...)
				b = append(b, "\ufffd"...)
				i += size
				start = i
				continue
			}
			i += size
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendUsage appends vLLM's UsageInfo. full adds prompt_tokens_details as
// model_dump writes it; streamed usage is dumped with exclude_unset or
// exclude_none and leaves it out.
func appendUsage(b []byte, prompt, completion int, full bool) []byte {
	b = append(b, `{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(prompt+completion), 10)
	b = append(b, `,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(completion), 10)
	if full {
		b = append(b, `,"prompt_tokens_details":null`...)
	}
	return append(b, '}')
}

// words is the fixed vocabulary output tokens are drawn from. Token i is
// words[i%len(words)] followed by a space; all plain ASCII, so generated text
// never needs JSON escaping.
var words = [...]string{
	"the", "model", "answers", "with", "a", "steady", "stream", "of",
	"plain", "words", "so", "that", "every", "byte", "can", "be",
	"audited", "and", "hashed", "before", "it", "reaches", "its", "client",
	"while", "latency", "stays", "low", "for", "each", "request", "served",
}

var tokens = func() [len(words)]string {
	var t [len(words)]string
	for i, w := range words {
		t[i] = w + " "
	}
	return t
}()

// Token returns the text of output token i (0-based), as the fake generates it.
func Token(i int) string { return tokens[i%len(tokens)] }

// cycle is all tokens in order, so n tokens are a few copies of it and a
// prefix rather than n tiny appends; cycleEnd[i] is where token i ends.
var cycle, cycleEnd = func() (string, [len(tokens) + 1]int) {
	var c string
	var end [len(tokens) + 1]int
	for i, t := range tokens {
		c += t
		end[i+1] = len(c)
	}
	return c, end
}()

// GeneratedText returns the text of n output tokens, what a non-streamed
// answer's content (or a stream's concatenated deltas) holds.
func GeneratedText(n int) string { return string(appendTokens(nil, n)) }

// appendTokens appends the text of output tokens 0 to n-1.
func appendTokens(b []byte, n int) []byte {
	for ; n >= len(tokens); n -= len(tokens) {
		b = append(b, cycle...)
	}
	return append(b, cycle[:cycleEnd[n]]...)
}

// CountWords returns the number of words in b, the fake's token count for
// prompt text. Words are separated by ASCII whitespace and control bytes
// (anything up to 0x20). It works on eight bytes at a time because it runs
// over every prompt byte at load-test rates.
func CountWords(b []byte) int {
	const (
		lo7  = 0x7f7f7f7f7f7f7f7f
		hi   = 0x8080808080808080
		bias = 0x5f5f5f5f5f5f5f5f // low 7 bits + 0x5f reach 0x80 iff they are >= 0x21
	)
	n := 0
	var prev uint64 // high bit of the byte before the current one: word byte
	for len(b) >= 8 {
		x := binary.LittleEndian.Uint64(b)
		word := (((x & lo7) + bias) | x) & hi // high bit set on word bytes
		before := word<<8 | prev              // was the previous byte a word byte
		n += bits.OnesCount64(word &^ before) // word bytes after a separator
		prev = word >> 56
		b = b[8:]
	}
	inWord := prev != 0
	for _, c := range b {
		w := c > 0x20
		if w && !inWord {
			n++
		}
		inWord = w
	}
	return n
}
