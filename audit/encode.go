package audit

import (
	"encoding/base64"
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends the event's JSON encoding to dst in RFC 8785
// canonical form (JCS): members sorted by name, no whitespace, strings and
// numbers as JCS writes them. It holds the same members and values as
// encoding/json.Marshal(ev) gives (see TestAppendJSONCanonicalForm), and
// the bytes the log hashes: the log adds its "log" member without parsing
// the event again (auditlog.Chain.Append). It neither reflects nor
// allocates, since it runs once per request.
//
// Every name here is ASCII, so sorting by UTF-16 code units is sorting by
// bytes; the order below is that order, level by level.
func (ev *Event) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"api_key_id":`...)
	if ev.APIKeyID == nil {
		dst = append(dst, "null"...)
	} else {
		dst = appendString(dst, *ev.APIKeyID)
	}
	dst = append(dst, `,"gpu":`...)
	if ev.GPU == nil {
		dst = append(dst, "null"...)
	} else {
		dst = appendString(dst, *ev.GPU)
	}
	dst = appendField(dst, "id", ev.ID)
	dst = append(dst, `,"input":`...)
	dst = ev.Input.appendJSON(dst)
	dst = append(dst, `,"latency_ms":{"overhead":`...)
	dst = appendFloat(dst, ev.Latency.Overhead)
	dst = append(dst, `,"total":`...)
	dst = appendFloat(dst, ev.Latency.Total)
	if ev.Latency.TTFT != nil {
		dst = append(dst, `,"ttft":`...)
		dst = appendFloat(dst, *ev.Latency.TTFT)
	}
	dst = append(dst, `,"upstream":`...)
	dst = appendFloat(dst, ev.Latency.Upstream)
	dst = append(dst, '}')
	if ev.Log != nil {
		dst = append(dst, `,"log":{"origin":`...)
		dst = appendString(dst, ev.Log.Origin)
		dst = appendField(dst, "prev", ev.Log.Prev)
		dst = append(dst, `,"seq":`...)
		dst = appendInt(dst, ev.Log.Seq)
		dst = append(dst, '}')
	}
	dst = appendField(dst, "method", ev.Method)
	dst = append(dst, `,"model":{`...)
	if ev.Model.BaseChecksum != "" {
		dst = append(dst, `"base_checksum":`...)
		dst = appendString(dst, ev.Model.BaseChecksum)
		dst = append(dst, ',')
	}
	if ev.Model.Checksum != "" {
		dst = append(dst, `"checksum":`...)
		dst = appendString(dst, ev.Model.Checksum)
		dst = append(dst, ',')
	}
	if ev.Model.FromAnswer {
		dst = append(dst, `"from_answer":true,`...)
	}
	dst = append(dst, `"name":`...)
	dst = appendString(dst, ev.Model.Name)
	if ev.Model.NameBytes != 0 {
		dst = append(dst, `,"name_bytes":`...)
		dst = appendInt(dst, ev.Model.NameBytes)
	}
	dst = append(dst, `},"output":`...)
	dst = ev.Output.appendJSON(dst)
	dst = appendField(dst, "path", ev.Path)
	if p := ev.Payload; p != nil {
		dst = append(dst, `,"payload":{"age":`...)
		if p.Age == nil {
			dst = append(dst, "null"...)
		} else {
			dst = append(dst, '"')
			dst = base64.StdEncoding.AppendEncode(dst, p.Age)
			dst = append(dst, '"')
		}
		dst = append(dst, `,"input_bytes":`...)
		dst = appendInt(dst, p.InputBytes)
		dst = append(dst, `,"output_bytes":`...)
		dst = appendInt(dst, p.OutputBytes)
		if p.Truncated {
			dst = append(dst, `,"truncated":true`...)
		}
		dst = append(dst, '}')
	}
	dst = appendField(dst, "request_id", ev.RequestID)
	dst = append(dst, `,"source":{"host":`...)
	dst = appendString(dst, ev.Source.Host)
	dst = appendField(dst, "version", ev.Source.Version)
	dst = append(dst, `},"status":{`...)
	if ev.Status.AfterEnd != "" {
		dst = append(dst, `"after_end":`...)
		dst = appendString(dst, ev.Status.AfterEnd)
		dst = append(dst, ',')
	}
	dst = append(dst, `"code":`...)
	dst = appendInt(dst, int64(ev.Status.Code))
	if ev.Status.Error != "" {
		dst = appendField(dst, "error", ev.Status.Error)
	}
	dst = appendField(dst, "outcome", string(ev.Status.Outcome))
	if ev.Status.UpstreamError != "" {
		dst = appendField(dst, "upstream_error", ev.Status.UpstreamError)
	}
	dst = append(dst, `},"stream":`...)
	dst = strconv.AppendBool(dst, ev.Stream)
	dst = append(dst, `,"time":"`...)
	dst = time.Time(ev.Time).UTC().AppendFormat(dst, timestampLayout)
	dst = append(dst, '"')
	dst = appendField(dst, "type", ev.Type)
	dst = append(dst, `,"v":`...)
	dst = appendInt(dst, int64(ev.V))
	return append(dst, '}')
}

func (b *Body) appendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	if b.AudioSeconds != nil {
		dst = append(dst, `"audio_seconds":`...)
		dst = appendFloat(dst, *b.AudioSeconds)
		dst = append(dst, ',')
	}
	dst = append(dst, `"bytes":`...)
	dst = appendInt(dst, b.Bytes)
	if b.FinishReason != "" {
		dst = appendField(dst, "finish_reason", b.FinishReason)
	}
	if b.Hash != "" {
		dst = appendField(dst, "hash", b.Hash)
	}
	dst = append(dst, `,"tokens":`...)
	if b.Tokens == nil {
		dst = append(dst, "null"...)
	} else {
		dst = appendInt(dst, *b.Tokens)
	}
	return append(dst, '}')
}

// appendField appends `,"name":"value"`.
func appendField(dst []byte, name, value string) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return appendString(dst, value)
}

// appendInt writes n as JCS does: JSON numbers are IEEE doubles there,
// so an integer beyond 2^53 is written as the double it reads as.
func appendInt(dst []byte, n int64) []byte {
	if n >= -1<<53 && n <= 1<<53 {
		return strconv.AppendInt(dst, n, 10)
	}
	return appendFloat(dst, float64(n))
}

// appendFloat writes f as JCS (ECMAScript's Number.prototype.toString)
// does: the shortest representation that reads back as f, in 'f' notation
// but for magnitudes below 1e-6 or from 1e21 on, whose exponent has no
// leading zero (1e-7, 1e+21); -0 as 0.
func appendFloat(dst []byte, f float64) []byte {
	if f == 0 {
		return append(dst, '0')
	}
	abs := f
	if abs < 0 {
		abs = -abs
	}
	if abs >= 1e-6 && abs < 1e21 {
		return strconv.AppendFloat(dst, f, 'f', -1, 64)
	}
	dst = strconv.AppendFloat(dst, f, 'e', -1, 64)
	if n := len(dst); dst[n-4] == 'e' && dst[n-2] == '0' {
		dst[n-2] = dst[n-1]
		dst = dst[:n-1]
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string as JCS writes it: quote,
// backslash and control characters escaped (\b \t \n \f \r, else \u00xx),
// everything else as it is, but bytes that are not UTF-8, written as U+FFFD
// (as encoding/json reads them).
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = utf8.AppendRune(dst, utf8.RuneError)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
