package transcript

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"
)

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReadFixtures: each API's stream and body, captured from the fake vLLM
// or written in vLLM's shapes, reads as the answer it carries.
func TestReadFixtures(t *testing.T) {
	fakeText := "the model answers with a "
	for _, tc := range []struct {
		file   string
		api    string
		ended  bool
		want   []Choice
		errors string
	}{
		{"chat.sse", Chat, true, []Choice{{Text: fakeText, FinishReason: "length"}}, ""},
		{"chat.json", Chat, true, []Choice{{Text: fakeText, FinishReason: "length"}}, ""},
		{"completions.sse", Completions, true, []Choice{{Text: fakeText, FinishReason: "length"}}, ""},
		{"completions.json", Completions, true, []Choice{{Text: fakeText, FinishReason: "length"}}, ""},
		{"responses.sse", Responses, true, []Choice{{Text: fakeText, FinishReason: "incomplete (max_output_tokens)"}}, ""},
		{"responses.json", Responses, true, []Choice{{Text: fakeText, FinishReason: "incomplete (max_output_tokens)"}}, ""},
		{"messages.sse", Messages, true, []Choice{{Text: fakeText, FinishReason: "max_tokens"}}, ""},
		{"messages_done.sse", Messages, true, []Choice{{Text: fakeText, FinishReason: "max_tokens"}}, ""},
		{"messages.json", Messages, true, []Choice{{Text: fakeText, FinishReason: "max_tokens"}}, ""},
		{"chat_error.sse", Chat, true, []Choice{{Text: "the model "}}, "InternalServerError: Simulated engine failure after 2 tokens (X-Fake-Midstream-Error)."},
		{"messages_error.sse", Messages, false, []Choice{{Text: "the model "}}, "internal_error: Simulated engine failure after 2 tokens (X-Fake-Midstream-Error)."},
		{"chat_n2_tools.sse", Chat, true, []Choice{
			{Index: 0, Reasoning: "The user wants weather.", FinishReason: "tool_calls", ToolCalls: []ToolCall{
				{Index: 0, ID: "chatcmpl-tool-a", Name: "get_weather", Arguments: `{"city": "Paris"}`},
				{Index: 1, ID: "chatcmpl-tool-b", Name: "get_time", Arguments: `{}`}}},
			{Index: 1, Text: "Second choice.", FinishReason: "stop"},
		}, ""},
		{"responses_tools.sse", Responses, true, []Choice{{Text: "Checking now.", Reasoning: "Need the weather.", FinishReason: "incomplete (max_output_tokens)",
			ToolCalls: []ToolCall{{Index: 1, ID: "call_1", Name: "get_weather", Arguments: `{"city":"Paris"}`}}}}, ""},
		{"messages_tools.sse", Messages, true, []Choice{{Text: "Let me check.", Reasoning: "Weather, so a tool.", FinishReason: "tool_use",
			ToolCalls: []ToolCall{{Index: 2, ID: "toolu_1", Name: "get_weather", Arguments: `{"city": "Paris"}`}}}}, ""},
	} {
		t.Run(tc.file, func(t *testing.T) {
			body := fixture(t, tc.file)
			a := Read(body)
			if a.API != tc.api || a.Ended != tc.ended || a.Streamed != strings.HasSuffix(tc.file, ".sse") {
				t.Errorf("api %q ended %v streamed %v", a.API, a.Ended, a.Streamed)
			}
			if !reflect.DeepEqual(a.Choices, tc.want) {
				t.Errorf("choices\n got %+v\nwant %+v", a.Choices, tc.want)
			}
			if got := strings.Join(a.Errors, "; "); got != tc.errors {
				t.Errorf("errors %q, want %q", got, tc.errors)
			}
			wantNotes := 0
			if !tc.ended {
				wantNotes = 1 // no end event
			}
			if len(a.Notes) != wantNotes {
				t.Errorf("notes %q", a.Notes)
			}
		})
	}
}

// TestReadHostileStreams: what a stream may hold that the fixtures do not.
func TestReadHostileStreams(t *testing.T) {
	chunk := func(content string) string {
		return `data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":` + content + `},"finish_reason":null}]}` + "\n\n"
	}
	big := strings.Repeat("x", 10<<20)
	for _, tc := range []struct {
		name  string
		body  string
		text  string
		ended bool
		notes []string // substrings, one per note, in order
	}{
		{"CRLF line ends", strings.ReplaceAll(chunk(`"a"`)+chunk(`"b"`)+"data: [DONE]\n\n", "\n", "\r\n"), "ab", true, nil},
		{"CR line ends", strings.ReplaceAll(chunk(`"a"`)+chunk(`"b"`)+"data: [DONE]\n\n", "\n", "\r"), "ab", true, nil},
		{"a byte order mark, comments, no space after the colon", "\ufeff: keep-alive\n\n" + strings.Replace(chunk(`"a"`), "data: ", "data:", 1) + "data:[DONE]\n\n", "a", true, nil},
		{"data split over two data lines", "data: {\"choices\":[{\"index\":0,\ndata: \"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n", "a", true, nil},
		{"malformed JSON in a frame", chunk(`"a"`) + "data: {\"choices\":[{\"delta\n\n" + chunk(`"b"`) + "data: [DONE]\n\n", "ab", true,
			[]string{"event 2 (19 bytes) is not JSON: skipped"}},
		{"a member of the wrong type", chunk(`"a"`) + chunk(`7`) + chunk(`"b"`) + "data: [DONE]\n\n", "ab", true,
			[]string{"event 2: a member has a type no API gives it: skipped (json: cannot unmarshal number"}},
		{"no [DONE]", chunk(`"a"`), "a", false, []string{"the stream has no end event"}},
		{"cut inside an event", chunk(`"a"`) + `data: {"choices":[{"index":0,"delta":{"content":"b`, "a", false,
			[]string{"the stream has no end event", "the body ends inside an event"}},
		{"a 10 MB delta", chunk(`"`+big+`"`) + "data: [DONE]\n\n", big, true, nil},
		{"escapes and control characters kept as sent", chunk(`"\u001b[31mred\u001b[0m\r\u0007"`) + "data: [DONE]\n\n", "\x1b[31mred\x1b[0m\r\a", true, nil},
		{"bytes that are not UTF-8", chunk("\"a\xff\xfeb\"") + "data: [DONE]\n\n", "a\ufffd\ufffdb", true, nil},
		{"events after [DONE]", "data: [DONE]\n\n" + chunk(`"late"`), "late", true, nil},
		{"neither JSON nor a stream", "<html>bad gateway</html>", "", false, []string{"the body ends inside an event", "neither JSON nor an event stream"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := Read([]byte(tc.body))
			text := ""
			if len(a.Choices) > 0 {
				text = a.Choices[0].Text
			}
			if text != tc.text || a.Ended != tc.ended {
				t.Errorf("text %.80q ended %v", text, a.Ended)
			}
			if len(a.Notes) != len(tc.notes) {
				t.Fatalf("notes %q, want %q", a.Notes, tc.notes)
			}
			for i, n := range tc.notes {
				if !strings.Contains(a.Notes[i], n) {
					t.Errorf("note %d %q, want %q", i, a.Notes[i], n)
				}
			}
		})
	}
}

// TestParserSplitAnywhere: events read from a stream written in pieces,
// split at every byte (a CRLF split included), are the events of the whole.
func TestParserSplitAnywhere(t *testing.T) {
	for _, name := range []string{"chat.sse", "responses_tools.sse", "messages_tools.sse"} {
		whole := fixture(t, name)
		crlf := bytes.ReplaceAll(whole, []byte("\n"), []byte("\r\n"))
		for _, body := range [][]byte{whole, crlf, append([]byte("\ufeff"), crlf...)} {
			var p Parser
			p.Write(body)
			want := p.Events()
			for i := 0; i <= len(body); i++ {
				var q Parser
				q.Write(body[:i])
				got := q.Events()
				q.Write(body[i:])
				got = append(got, q.Events()...)
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("%s split at %d: %d events, want %d", name, i, len(got), len(want))
				}
			}
			var q Parser
			for i := range body {
				q.Write(body[i : i+1])
			}
			if got := q.Events(); !reflect.DeepEqual(got, want) || q.Pending() {
				t.Fatalf("%s byte by byte: %d events, want %d", name, len(got), len(want))
			}
		}
	}
}

// TestPrintable: nothing in a text can drive a terminal.
func TestPrintable(t *testing.T) {
	for _, tc := range []struct{ in, want, line string }{
		{"plain text\n\tindented", "plain text\n\tindented", `plain text\n\tindented`},
		{"\x1b[31mred\x1b[0m", `\x1b[31mred\x1b[0m`, `\x1b[31mred\x1b[0m`},
		{"\x1b]0;title\x07", `\x1b]0;title\x07`, `\x1b]0;title\x07`},
		{"over\rwrite", `over\rwrite`, `over\rwrite`},
		{"del\x7f nul\x00", `del\x7f nul\x00`, `del\x7f nul\x00`},
		{"bad \xff\xfe utf-8 \xe2\x82", `bad \xff\xfe utf-8 \xe2\x82`, `bad \xff\xfe utf-8 \xe2\x82`},
		{"c1 \u009b31m", `c1 \u009b31m`, `c1 \u009b31m`},
		{"bidi \u202eevil\u2066", `bidi \u202eevil\u2066`, `bidi \u202eevil\u2066`},
		{"unicode ü 日本 🙂", "unicode ü 日本 🙂", "unicode ü 日本 🙂"},
	} {
		if got := Printable([]byte(tc.in)); got != tc.want {
			t.Errorf("Printable(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got := Line(tc.in); got != tc.line {
			t.Errorf("Line(%q) = %q, want %q", tc.in, got, tc.line)
		}
	}
}

// safeForTerminal reports whether s holds nothing Printable escapes.
func safeForTerminal(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f || unsafeRune(r) {
			return false
		}
	}
	return true
}

// FuzzRead: any body reads without a panic; the stream's events do not
// depend on where it was split; every text of the answer, once Printable,
// is safe for a terminal; a JSON body, once EscapeJSON'd, is the same value
// and safe too.
func FuzzRead(f *testing.F) {
	for _, name := range []string{"chat.sse", "chat.json", "responses.sse", "responses.json", "messages.sse", "messages_error.sse",
		"chat_n2_tools.sse", "responses_tools.sse", "messages_tools.sse", "completions.sse"} {
		f.Add(fixture(f, name), uint16(17))
	}
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"\\u001b[2J\"}}]}\r\n\r\ndata: [DONE]\r"), uint16(3))
	f.Fuzz(func(t *testing.T, body []byte, split uint16) {
		a := Read(body)
		check := func(what, s string) {
			if p := Printable([]byte(s)); !safeForTerminal(p) {
				t.Fatalf("%s: Printable(%q) = %q", what, s, p)
			}
			if l := Line(s); !safeForTerminal(l) || strings.ContainsAny(l, "\n\t") {
				t.Fatalf("%s: Line(%q) = %q", what, s, l)
			}
		}
		for _, c := range a.Choices {
			check("text", c.Text)
			check("reasoning", c.Reasoning)
			check("finish reason", c.FinishReason)
			for _, tc := range c.ToolCalls {
				check("tool call", tc.Name+tc.ID+tc.Arguments)
			}
		}
		for _, s := range append(a.Errors, a.Notes...) {
			check("note", s)
		}
		check("body", string(body))
		if json.Valid(body) {
			// EscapeJSON keeps the value, and leaves nothing for a terminal.
			e := EscapeJSON(body)
			var v1, v2 any
			if json.Unmarshal(body, &v1) != nil || json.Unmarshal(e, &v2) != nil || !reflect.DeepEqual(v1, v2) {
				t.Fatalf("EscapeJSON(%q) = %q: another value", body, e)
			}
			if s := string(e); !utf8.ValidString(s) || strings.ContainsFunc(s, unsafeRune) {
				t.Fatalf("EscapeJSON(%q) = %q", body, e)
			}
		}
		i := int(split) % (len(body) + 1)
		var whole, parts Parser
		whole.Write(body)
		parts.Write(body[:i])
		parts.Write(body[i:])
		if w, p := whole.Events(), parts.Events(); !reflect.DeepEqual(w, p) || whole.Pending() != parts.Pending() {
			t.Fatalf("split at %d: %d events, whole %d", i, len(p), len(w))
		}
	})
}

func TestEscapeJSON(t *testing.T) {
	in := []byte(`{"a":"x` + "\u009b" + `y` + "\u202e" + `z","b":"ü"}`)
	got := EscapeJSON(in)
	if string(got) != `{"a":"x\u009by\u202ez","b":"ü"}` {
		t.Errorf("EscapeJSON = %s", got)
	}
	if got := EscapeJSON([]byte("[\"a\xffb\"]")); string(got) != `["a\ufffdb"]` {
		t.Errorf("EscapeJSON of a byte that is not UTF-8 = %q", got)
	}
	var v1, v2 any
	if json.Unmarshal(in, &v1) != nil || json.Unmarshal(got, &v2) != nil || !reflect.DeepEqual(v1, v2) {
		t.Errorf("EscapeJSON changed the value: %v %v", v1, v2)
	}
	if plain := []byte(`{"a":1}`); &EscapeJSON(plain)[0] != &plain[0] {
		t.Error("EscapeJSON copied a text with nothing to escape")
	}
}

// TestToolCallArgumentsInManyDeltas: a call's arguments streamed in many
// small deltas are joined in time and memory linear in the stream (they
// were appended to a string, copied whole at each delta: a 7.7 MB stream
// of 40,000 deltas took 20 s).
func TestToolCallArgumentsInManyDeltas(t *testing.T) {
	const n = 5000
	piece := strings.Repeat("x", 95)
	var b bytes.Buffer
	b.WriteString(`data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}}]}` + "\n\n")
	for range n {
		b.WriteString(`data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"` + piece + `"}}]}}]}` + "\n\n")
	}
	b.WriteString("data: [DONE]\n\n")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	a := Read(b.Bytes())
	runtime.ReadMemStats(&after)
	if len(a.Choices) != 1 || len(a.Choices[0].ToolCalls) != 1 || a.Choices[0].ToolCalls[0].Arguments != strings.Repeat(piece, n) || a.Choices[0].ToolCalls[0].Name != "f" {
		t.Fatalf("the call is not re-assembled: %+v", a.Choices)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 30*uint64(b.Len()) {
		t.Errorf("reading a %d-byte stream allocated %d bytes: more than 30 times the stream", b.Len(), alloc)
	}
}
