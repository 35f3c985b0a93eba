package audit

import (
	"encoding/base64"
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends the event's JSON encoding to dst: the same bytes as
// encoding/json.Marshal(ev) gives (see TestAppendJSONMatchesEncodingJSON),
// without reflection or allocation, since it runs once per request.
func (ev *Event) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"v":`...)
	dst = strconv.AppendInt(dst, int64(ev.V), 10)
	dst = appendField(dst, "type", ev.Type)
	dst = appendField(dst, "id", ev.ID)
	dst = append(dst, `,"time":"`...)
	dst = time.Time(ev.Time).UTC().AppendFormat(dst, timestampLayout)
	dst = append(dst, '"')
	dst = appendField(dst, "request_id", ev.RequestID)
	dst = appendField(dst, "method", ev.Method)
	dst = appendField(dst, "path", ev.Path)
	dst = append(dst, `,"stream":`...)
	dst = strconv.AppendBool(dst, ev.Stream)
	dst = append(dst, `,"model":{"name":`...)
	dst = appendString(dst, ev.Model.Name)
	if ev.Model.NameBytes != 0 {
		dst = append(dst, `,"name_bytes":`...)
		dst = strconv.AppendInt(dst, ev.Model.NameBytes, 10)
	}
	if ev.Model.Checksum != "" {
		dst = appendField(dst, "checksum", ev.Model.Checksum)
	}
	if ev.Model.BaseChecksum != "" {
		dst = appendField(dst, "base_checksum", ev.Model.BaseChecksum)
	}
	dst = append(dst, `},"gpu":`...)
	if ev.GPU == nil {
		dst = append(dst, "null"...)
	} else {
		dst = appendString(dst, *ev.GPU)
	}
	dst = append(dst, `,"input":`...)
	dst = ev.Input.appendJSON(dst)
	dst = append(dst, `,"output":`...)
	dst = ev.Output.appendJSON(dst)
	dst = append(dst, `,"api_key_id":`...)
	if ev.APIKeyID == nil {
		dst = append(dst, "null"...)
	} else {
		dst = appendString(dst, *ev.APIKeyID)
	}
	dst = append(dst, `,"latency_ms":{"total":`...)
	dst = appendFloat(dst, ev.Latency.Total)
	if ev.Latency.TTFT != nil {
		dst = append(dst, `,"ttft":`...)
		dst = appendFloat(dst, *ev.Latency.TTFT)
	}
	dst = append(dst, `,"upstream":`...)
	dst = appendFloat(dst, ev.Latency.Upstream)
	dst = append(dst, `,"overhead":`...)
	dst = appendFloat(dst, ev.Latency.Overhead)
	dst = append(dst, `},"status":{"code":`...)
	dst = strconv.AppendInt(dst, int64(ev.Status.Code), 10)
	dst = appendField(dst, "outcome", string(ev.Status.Outcome))
	if ev.Status.Error != "" {
		dst = appendField(dst, "error", ev.Status.Error)
	}
	if ev.Status.UpstreamError != "" {
		dst = appendField(dst, "upstream_error", ev.Status.UpstreamError)
	}
	if ev.Status.AfterEnd != "" {
		dst = appendField(dst, "after_end", ev.Status.AfterEnd)
	}
	dst = append(dst, `},"source":{"host":`...)
	dst = appendString(dst, ev.Source.Host)
	dst = appendField(dst, "version", ev.Source.Version)
	dst = append(dst, '}')
	if p := ev.Payload; p != nil {
		dst = append(dst, `,"payload":{"age":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, p.Age)
		dst = append(dst, `","input_bytes":`...)
		dst = strconv.AppendInt(dst, p.InputBytes, 10)
		dst = append(dst, `,"output_bytes":`...)
		dst = strconv.AppendInt(dst, p.OutputBytes, 10)
		if p.Truncated {
			dst = append(dst, `,"truncated":true`...)
		}
		dst = append(dst, '}')
	}
	if ev.Log != nil {
		dst = append(dst, `,"log":{"origin":`...)
		dst = appendString(dst, ev.Log.Origin)
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendInt(dst, ev.Log.Seq, 10)
		dst = appendField(dst, "prev", ev.Log.Prev)
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

func (b *Body) appendJSON(dst []byte) []byte {
	dst = append(dst, '{')
	if b.Hash != "" {
		dst = append(dst, `"hash":`...)
		dst = appendString(dst, b.Hash)
		dst = append(dst, ',')
	}
	dst = append(dst, `"bytes":`...)
	dst = strconv.AppendInt(dst, b.Bytes, 10)
	dst = append(dst, `,"tokens":`...)
	if b.Tokens == nil {
		dst = append(dst, "null"...)
	} else {
		dst = strconv.AppendInt(dst, *b.Tokens, 10)
	}
	if b.FinishReason != "" {
		dst = appendField(dst, "finish_reason", b.FinishReason)
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

// appendFloat formats like encoding/json: shortest representation, 'f'
// notation except for very small or large magnitudes.
func appendFloat(dst []byte, f float64) []byte {
	abs := f
	if abs < 0 {
		abs = -abs
	}
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// encoding/json writes e-07, not e-7... except it cleans "e-07" to "e-7".
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, escaping as encoding/json does
// with HTML escaping off: control characters, quote, backslash, invalid
// UTF-8 (as U+FFFD) and U+2028/U+2029.
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
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
