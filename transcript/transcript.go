// Package transcript owns reading a captured exchange back as text, for an
// auditor: it re-assembles a vLLM answer, a Server-Sent Events stream of any
// API vLLM streams or a JSON body, into what each choice said (its text,
// reasoning, tool calls and finish reason), and it makes bytes safe to
// print on a terminal (Printable, Line).
//
// The formats are vLLM's, as docs/vllm-wire-format.md records them and
// internal/fakevllm reproduces them:
//
//   - Chat completions: "data: {chunk}" events whose choices[i].delta holds
//     content, reasoning_content (or reasoning) and tool_calls (an index, then
//     an id and function.name once, then function.arguments in pieces), and
//     finish_reason; then "data: [DONE]". A non-streamed body has
//     choices[i].message.
//   - Completions: choices[i].text, in events or in the body.
//   - Responses API: "event: response.<type>" events: output_text.delta,
//     reasoning_text.delta, reasoning_summary_text.delta, refusal.delta,
//     function_call_arguments.delta (the call's name and id in
//     output_item.added), output_text.done (the part's whole text), and
//     response.completed (or .incomplete, .failed) with the final status;
//     no [DONE]. A non-streamed body is the response object with output[].
//   - Messages API (Anthropic): content_block_start (a text, thinking or
//     tool_use block), content_block_delta (text_delta, thinking_delta,
//     input_json_delta), message_delta (stop_reason), message_stop; older
//     vLLM releases add "data: [DONE]". A non-streamed body has content[].
//   - Transcriptions: chat-shaped chunks (delta.content); a body's "text".
//
// Reading never fails: an event that is not JSON, a member of the wrong
// type, an error event, a stream without its end become notes of the
// Answer, and the rest is read. Texts are kept as the bytes the answer
// carried (JSON-unescaped); escape them with Printable before they reach a
// terminal.
package transcript

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// The APIs an answer is recognised as (Answer.API).
const (
	Chat          = "chat completions"
	Completions   = "completions"
	Responses     = "responses"
	Messages      = "messages"
	Transcription = "transcription"
)

// Answer is what a response body said, read back.
type Answer struct {
	// API is the format recognised, one of the constants above; "" when
	// the body is none of them (an embedding, an error body, not JSON).
	API string `json:"api"`
	// Streamed says the body is an event stream.
	Streamed bool `json:"streamed"`
	// Events counts the stream's events (0 for a body).
	Events int `json:"events,omitempty"`
	// Ended says the stream's end arrived: data: [DONE], the Responses
	// API's response.completed (or .incomplete, .failed), the Messages API's
	// message_stop. Always true for a body.
	Ended bool `json:"ended"`
	// Choices are the answer's choices by index, in index order: one for
	// the Responses and Messages APIs, n for a chat or completion request
	// with n > 1.
	Choices []Choice `json:"choices"`
	// Errors are the errors the answer carries (an error event or member),
	// each as "type: message".
	Errors []string `json:"errors,omitempty"`
	// Notes say what could not be read, and why.
	Notes []string `json:"notes,omitempty"`
}

// Choice is one choice of an answer.
type Choice struct {
	Index     int    `json:"index"`
	Text      string `json:"text"`
	Reasoning string `json:"reasoning,omitempty"`
	Refusal   string `json:"refusal,omitempty"`
	// ToolCalls are the calls the choice made, by their index.
	ToolCalls    []ToolCall `json:"tool_calls,omitempty"`
	FinishReason string     `json:"finish_reason,omitempty"`
}

// ToolCall is one function call: its arguments as the model wrote them
// (JSON text, for a call streamed in pieces possibly cut).
type ToolCall struct {
	Index     int    `json:"index"`
	ID        string `json:"id,omitempty"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// Read reads a response body: an event stream, or a JSON body.
func Read(body []byte) Answer {
	if t := bytes.TrimSpace(body); len(t) > 0 && (t[0] == '{' || t[0] == '[') && json.Valid(t) {
		return readBody(t)
	}
	var p Parser
	p.Write(body)
	s := NewStream()
	for _, ev := range p.Events() {
		s.Add(ev)
	}
	a := s.Answer()
	if p.Pending() {
		a.Notes = append(a.Notes, "the body ends inside an event (no empty line after it): that event is not read; the capture may be cut")
	}
	if a.Events == 0 {
		a.Streamed = false
		a.Notes = append(a.Notes, "the body is neither JSON nor an event stream")
	}
	return a
}

// Stream assembles an answer from a stream's events, one Add at a time.
type Stream struct {
	a       Answer
	choices map[int]*choice
	// parts are the Responses API's content parts by output and content
	// index: the text of each, in the order of their indexes.
	parts map[[2]int]*part
	// blocks are the Messages API's content blocks by index.
	blocks map[int]*part
	bad    int // events that were not JSON
}

type choice struct {
	Choice
	text, reasoning, refusal strings.Builder
	calls                    map[int]*ToolCall
	// args are the chat calls' argument deltas, by call index, joined at
	// the end: appended to a string, each delta copied the whole.
	args     map[int]*strings.Builder
	lastCall int
}

// part is a Responses content part, or a Messages content block.
type part struct {
	kind string // "text", "reasoning", "refusal", "tool"
	b    strings.Builder
	done *string // a Responses part's whole text, from its .done event
}

// NewStream returns an empty Stream.
func NewStream() *Stream {
	return &Stream{a: Answer{Streamed: true}, choices: map[int]*choice{}, parts: map[[2]int]*part{}, blocks: map[int]*part{}}
}

func (s *Stream) choice(i int) *choice {
	c := s.choices[i]
	if c == nil {
		c = &choice{Choice: Choice{Index: i}, calls: map[int]*ToolCall{}, args: map[int]*strings.Builder{}, lastCall: -1}
		s.choices[i] = c
	}
	return c
}

func (s *Stream) note(format string, args ...any) {
	if len(s.a.Notes) < maxNotes {
		s.a.Notes = append(s.a.Notes, fmt.Sprintf(format, args...))
	} else if len(s.a.Notes) == maxNotes {
		s.a.Notes = append(s.a.Notes, "more notes left out")
	}
}

// maxNotes bounds the notes of one answer: a hostile stream of a million
// bad events says so once per kind, not a million times.
const maxNotes = 20

// frame is every member this package reads, of any API's event or body.
// Members of the wrong type make the whole event unreadable (noted).
type frame struct {
	Type    string `json:"type"`
	Object  string `json:"object"`
	Choices []struct {
		Index        int      `json:"index"`
		Delta        *message `json:"delta"`
		Message      *message `json:"message"`
		Text         *string  `json:"text"`
		FinishReason *string  `json:"finish_reason"`
	} `json:"choices"`
	Error json.RawMessage `json:"error"`
	// Flat errors of older vLLM releases: {"object":"error","message":…}.
	Message json.RawMessage `json:"message"`
	// Responses and Messages events.
	Delta        json.RawMessage `json:"delta"`
	Index        int             `json:"index"`
	OutputIndex  int             `json:"output_index"`
	ContentIndex int             `json:"content_index"`
	SummaryIndex int             `json:"summary_index"`
	Item         json.RawMessage `json:"item"`
	Response     json.RawMessage `json:"response"`
	ContentBlock json.RawMessage `json:"content_block"`
	Text         *string         `json:"text"`
	Code         json.RawMessage `json:"code"`
	// Bodies.
	Content           json.RawMessage `json:"content"`
	Output            json.RawMessage `json:"output"`
	StopReason        *string         `json:"stop_reason"`
	Status            string          `json:"status"`
	IncompleteDetails *struct {
		Reason string `json:"reason"`
	} `json:"incomplete_details"`
}

type message struct {
	Content          *string    `json:"content"`
	ReasoningContent *string    `json:"reasoning_content"`
	Reasoning        *string    `json:"reasoning"`
	Refusal          *string    `json:"refusal"`
	ToolCalls        []chatCall `json:"tool_calls"`
}

type chatCall struct {
	Index    *int   `json:"index"`
	ID       string `json:"id"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// Add reads one event.
func (s *Stream) Add(ev Event) {
	s.a.Events++
	n := s.a.Events
	data := bytes.TrimSpace(ev.Data)
	if string(data) == "[DONE]" {
		s.a.Ended = true
		return
	}
	var f frame
	if err := json.Unmarshal(data, &f); err != nil {
		s.bad++
		switch {
		case s.bad > 3:
		case !json.Valid(data):
			s.note("event %d (%d bytes) is not JSON: skipped", n, len(data))
		default:
			s.note("event %d: a member has a type no API gives it: skipped (%s)", n, shortErr(err))
		}
		return
	}
	typ := f.Type
	if typ == "" {
		typ = ev.Type
	}
	switch {
	case typ == "error" && isError(f.Error):
		// The Messages API's {"type":"error","error":{…}}.
		s.a.Errors = append(s.a.Errors, errorText(f.Error))
	case typ == "error":
		// The Responses API's {"type":"error","code":…,"message":…}.
		s.a.Errors = append(s.a.Errors, errorText(errorMembers(&f)))
	case strings.HasPrefix(typ, "response."):
		s.responses(typ, &f, n)
	case typ == "message_start" || typ == "message_delta" || typ == "message_stop" || typ == "ping" ||
		strings.HasPrefix(typ, "content_block_"):
		s.messages(typ, &f, n)
	case len(f.Choices) > 0 || f.Object == "chat.completion.chunk" || f.Object == "text_completion" || strings.HasSuffix(f.Object, ".chunk"):
		s.chat(&f)
	case isError(f.Error):
		s.a.Errors = append(s.a.Errors, errorText(f.Error))
	case f.Object == "error":
		s.a.Errors = append(s.a.Errors, errorText(data))
	}
}

func (s *Stream) setAPI(api string) {
	if s.a.API == "" {
		s.a.API = api
	}
}

// chat reads a chat, completion or transcription chunk.
func (s *Stream) chat(f *frame) {
	switch {
	case strings.HasPrefix(f.Object, "transcription") || strings.HasPrefix(f.Object, "translation"):
		s.setAPI(Transcription)
	case f.Object == "text_completion":
		s.setAPI(Completions)
	}
	for _, ch := range f.Choices {
		c := s.choice(ch.Index)
		if ch.Text != nil {
			s.setAPI(Completions)
			c.text.WriteString(*ch.Text)
		}
		if d := ch.Delta; d != nil {
			s.setAPI(Chat)
			addMessage(c, d)
		}
		if ch.FinishReason != nil && *ch.FinishReason != "" {
			c.FinishReason = *ch.FinishReason
		}
	}
	if isError(f.Error) {
		s.a.Errors = append(s.a.Errors, errorText(f.Error))
	}
}

func addMessage(c *choice, m *message) {
	if m.Content != nil {
		c.text.WriteString(*m.Content)
	}
	if m.ReasoningContent != nil {
		c.reasoning.WriteString(*m.ReasoningContent)
	} else if m.Reasoning != nil {
		c.reasoning.WriteString(*m.Reasoning)
	}
	if m.Refusal != nil {
		c.refusal.WriteString(*m.Refusal)
	}
	for _, tc := range m.ToolCalls {
		i := c.lastCall
		switch {
		case tc.Index != nil:
			i = *tc.Index
		case tc.ID != "" || i < 0:
			// No index (not vLLM's form): a call with an id is a new one.
			i = len(c.calls)
		}
		call := c.calls[i]
		if call == nil {
			call = &ToolCall{Index: i}
			c.calls[i] = call
		}
		if tc.ID != "" {
			call.ID = tc.ID
		}
		if tc.Function.Name != "" {
			call.Name = tc.Function.Name
		}
		if tc.Function.Arguments != "" {
			b := c.args[i]
			if b == nil {
				b = &strings.Builder{}
				c.args[i] = b
			}
			b.WriteString(tc.Function.Arguments)
		}
		c.lastCall = i
	}
}

// responses reads a Responses API event.
func (s *Stream) responses(typ string, f *frame, n int) {
	s.setAPI(Responses)
	c := s.choice(0)
	key := [2]int{f.OutputIndex, f.ContentIndex}
	get := func(kind string, k [2]int) *part {
		p := s.parts[k]
		if p == nil {
			p = &part{kind: kind}
			s.parts[k] = p
		}
		return p
	}
	delta := func() string {
		var d string
		if len(f.Delta) > 0 && json.Unmarshal(f.Delta, &d) != nil {
			s.note("event %d (%s): its delta is not a string: skipped", n, typ)
		}
		return d
	}
	switch typ {
	case "response.output_item.added", "response.output_item.done":
		var item struct {
			Type      string `json:"type"`
			CallID    string `json:"call_id"`
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		}
		if json.Unmarshal(f.Item, &item) == nil && item.Type == "function_call" {
			p := get("tool", [2]int{f.OutputIndex, -1})
			call := c.calls[f.OutputIndex]
			if call == nil {
				call = &ToolCall{Index: f.OutputIndex}
				c.calls[f.OutputIndex] = call
			}
			call.ID, call.Name = item.CallID, item.Name
			if typ == "response.output_item.done" && p.b.Len() == 0 {
				p.b.WriteString(item.Arguments)
			}
		}
	case "response.output_text.delta":
		get("text", key).b.WriteString(delta())
	case "response.refusal.delta":
		get("refusal", key).b.WriteString(delta())
	case "response.reasoning_text.delta":
		get("reasoning", key).b.WriteString(delta())
	case "response.reasoning_summary_text.delta":
		get("reasoning", [2]int{f.OutputIndex, 1000 + f.SummaryIndex}).b.WriteString(delta())
	case "response.function_call_arguments.delta":
		get("tool", [2]int{f.OutputIndex, -1}).b.WriteString(delta())
	case "response.output_text.done":
		if f.Text != nil {
			t := *f.Text
			get("text", key).done = &t
		}
	case "response.completed", "response.incomplete", "response.failed":
		s.a.Ended = true
		var r struct {
			Status            string `json:"status"`
			IncompleteDetails *struct {
				Reason string `json:"reason"`
			} `json:"incomplete_details"`
			Error json.RawMessage `json:"error"`
		}
		if json.Unmarshal(f.Response, &r) != nil {
			s.note("event %d (%s): its response is not readable", n, typ)
		}
		c.FinishReason = responseStatus(r.Status, r.IncompleteDetails)
		if isError(r.Error) {
			s.a.Errors = append(s.a.Errors, errorText(r.Error))
		}
	}
}

func responseStatus(status string, inc *struct {
	Reason string `json:"reason"`
}) string {
	if inc != nil && inc.Reason != "" {
		return status + " (" + inc.Reason + ")"
	}
	return status
}

// messages reads a Messages API event.
func (s *Stream) messages(typ string, f *frame, n int) {
	s.setAPI(Messages)
	c := s.choice(0)
	switch typ {
	case "content_block_start":
		var b struct {
			Type     string `json:"type"`
			Text     string `json:"text"`
			Thinking string `json:"thinking"`
			ID       string `json:"id"`
			Name     string `json:"name"`
		}
		if json.Unmarshal(f.ContentBlock, &b) != nil {
			s.note("event %d (%s): its content_block is not readable", n, typ)
			return
		}
		p := &part{}
		switch b.Type {
		case "text":
			p.kind = "text"
			p.b.WriteString(b.Text)
		case "thinking":
			p.kind = "reasoning"
			p.b.WriteString(b.Thinking)
		case "tool_use", "server_tool_use":
			p.kind = "tool"
			c.calls[f.Index] = &ToolCall{Index: f.Index, ID: b.ID, Name: b.Name}
		default:
			p.kind = "other"
		}
		s.blocks[f.Index] = p
	case "content_block_delta":
		var d struct {
			Type        string `json:"type"`
			Text        string `json:"text"`
			Thinking    string `json:"thinking"`
			PartialJSON string `json:"partial_json"`
		}
		if json.Unmarshal(f.Delta, &d) != nil {
			s.note("event %d (%s): its delta is not readable", n, typ)
			return
		}
		p := s.blocks[f.Index]
		if p == nil {
			// A delta without its block's start: read it as its type says.
			p = &part{kind: map[string]string{"text_delta": "text", "thinking_delta": "reasoning", "input_json_delta": "tool"}[d.Type]}
			if p.kind == "tool" && c.calls[f.Index] == nil {
				c.calls[f.Index] = &ToolCall{Index: f.Index}
			}
			s.blocks[f.Index] = p
		}
		switch d.Type {
		case "text_delta":
			p.b.WriteString(d.Text)
		case "thinking_delta":
			p.b.WriteString(d.Thinking)
		case "input_json_delta":
			p.b.WriteString(d.PartialJSON)
		}
	case "message_delta":
		var d struct {
			StopReason *string `json:"stop_reason"`
		}
		if json.Unmarshal(f.Delta, &d) == nil && d.StopReason != nil {
			c.FinishReason = *d.StopReason
		}
	case "message_stop":
		s.a.Ended = true
	}
}

// Answer returns the answer assembled from the events added so far.
func (s *Stream) Answer() Answer {
	a := s.a
	if s.bad > 3 {
		a.Notes = append(a.Notes, fmt.Sprintf("%d events in all are not readable", s.bad))
	}
	if c := s.choices[0]; c != nil || len(s.parts) > 0 || len(s.blocks) > 0 {
		c = s.choice(0)
		s.assembleParts(c, &a)
	}
	a.Choices = finish(s.choices)
	if a.Streamed && !a.Ended && a.Events > 0 {
		a.Notes = append(a.Notes, "the stream has no end event (data: [DONE], response.completed or message_stop): the answer may be cut")
	}
	return a
}

// assembleParts joins the Responses parts and Messages blocks of c, in
// index order.
func (s *Stream) assembleParts(c *choice, a *Answer) {
	keys := make([][2]int, 0, len(s.parts))
	for k := range s.parts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i][0] != keys[j][0] {
			return keys[i][0] < keys[j][0]
		}
		return keys[i][1] < keys[j][1]
	})
	for _, k := range keys {
		p := s.parts[k]
		text := p.b.String()
		if p.done != nil {
			switch {
			case p.b.Len() == 0:
				text = *p.done
			case *p.done != text:
				a.Notes = append(a.Notes, fmt.Sprintf("output %d part %d: its deltas (%d bytes) differ from its output_text.done text (%d bytes); the deltas, what a streaming client shows, are given", k[0], k[1], len(text), len(*p.done)))
			}
		}
		addPart(c, p.kind, text, k[0])
	}
	idx := make([]int, 0, len(s.blocks))
	for i := range s.blocks {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	for _, i := range idx {
		p := s.blocks[i]
		addPart(c, p.kind, p.b.String(), i)
	}
	s.parts, s.blocks = map[[2]int]*part{}, map[int]*part{}
}

func addPart(c *choice, kind, text string, i int) {
	switch kind {
	case "text":
		c.text.WriteString(text)
	case "reasoning":
		c.reasoning.WriteString(text)
	case "refusal":
		c.refusal.WriteString(text)
	case "tool":
		call := c.calls[i]
		if call == nil {
			call = &ToolCall{Index: i}
			c.calls[i] = call
		}
		call.Arguments += text
	}
}

func finish(m map[int]*choice) []Choice {
	out := make([]Choice, 0, len(m))
	for _, c := range m {
		ch := c.Choice
		ch.Text, ch.Reasoning, ch.Refusal = c.text.String(), c.reasoning.String(), c.refusal.String()
		ch.ToolCalls = nil
		for i, call := range c.calls {
			tc := *call
			if b := c.args[i]; b != nil {
				tc.Arguments += b.String()
			}
			ch.ToolCalls = append(ch.ToolCalls, tc)
		}
		sort.Slice(ch.ToolCalls, func(i, j int) bool { return ch.ToolCalls[i].Index < ch.ToolCalls[j].Index })
		out = append(out, ch)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out
}

// readBody reads a non-streamed JSON answer.
func readBody(body []byte) Answer {
	s := NewStream()
	s.a.Streamed, s.a.Ended = false, true
	var f frame
	if err := json.Unmarshal(body, &f); err != nil {
		s.note("the body is JSON, but not an answer this package reads (%s)", shortErr(err))
		return s.Answer()
	}
	c := func() *choice { return s.choice(0) }
	switch {
	case len(f.Choices) > 0:
		for _, ch := range f.Choices {
			cc := s.choice(ch.Index)
			switch {
			case ch.Message != nil:
				s.setAPI(Chat)
				addMessage(cc, ch.Message)
			case ch.Text != nil:
				s.setAPI(Completions)
				cc.text.WriteString(*ch.Text)
			}
			if ch.FinishReason != nil {
				cc.FinishReason = *ch.FinishReason
			}
		}
	case f.Object == "response":
		s.setAPI(Responses)
		var items []struct {
			Type    string `json:"type"`
			Content []struct {
				Type    string `json:"type"`
				Text    string `json:"text"`
				Refusal string `json:"refusal"`
			} `json:"content"`
			Summary []struct {
				Text string `json:"text"`
			} `json:"summary"`
			CallID    string `json:"call_id"`
			Name      string `json:"name"`
			Arguments string `json:"arguments"`
		}
		if len(f.Output) > 0 && json.Unmarshal(f.Output, &items) != nil {
			s.note("the response's output is not readable")
		}
		cc := c()
		for i, it := range items {
			switch it.Type {
			case "message":
				for _, p := range it.Content {
					cc.text.WriteString(p.Text)
					cc.refusal.WriteString(p.Refusal)
				}
			case "reasoning":
				for _, p := range it.Content {
					cc.reasoning.WriteString(p.Text)
				}
				for _, p := range it.Summary {
					cc.reasoning.WriteString(p.Text)
				}
			case "function_call":
				cc.calls[i] = &ToolCall{Index: i, ID: it.CallID, Name: it.Name, Arguments: it.Arguments}
			}
		}
		cc.FinishReason = responseStatus(f.Status, f.IncompleteDetails)
	case f.Type == "message":
		s.setAPI(Messages)
		var blocks []struct {
			Type     string          `json:"type"`
			Text     string          `json:"text"`
			Thinking string          `json:"thinking"`
			ID       string          `json:"id"`
			Name     string          `json:"name"`
			Input    json.RawMessage `json:"input"`
		}
		if len(f.Content) > 0 && json.Unmarshal(f.Content, &blocks) != nil {
			s.note("the message's content is not readable")
		}
		cc := c()
		for i, b := range blocks {
			switch b.Type {
			case "text":
				cc.text.WriteString(b.Text)
			case "thinking":
				cc.reasoning.WriteString(b.Thinking)
			case "tool_use", "server_tool_use":
				cc.calls[i] = &ToolCall{Index: i, ID: b.ID, Name: b.Name, Arguments: string(b.Input)}
			}
		}
		if f.StopReason != nil {
			cc.FinishReason = *f.StopReason
		}
	case f.Text != nil:
		s.setAPI(Transcription)
		c().text.WriteString(*f.Text)
	}
	switch {
	case isError(f.Error):
		s.a.Errors = append(s.a.Errors, errorText(f.Error))
	case f.Object == "error", f.Type == "error":
		s.a.Errors = append(s.a.Errors, errorText(body))
	}
	return s.Answer()
}

// isError reports whether an error member is one (the OpenAI Python SDK's
// rule, which the proxy follows: null, false, 0, "", {} and [] are not).
func isError(raw json.RawMessage) bool {
	t := string(bytes.TrimSpace(raw))
	switch t {
	case "", "null", "false", "0", `""`, "{}", "[]":
		return false
	}
	return true
}

// errorText says what an error member (or a flat error object) holds:
// "type: message", or the member's JSON when it has neither.
func errorText(raw json.RawMessage) string {
	var e struct {
		Type    any `json:"type"`
		Code    any `json:"code"`
		Message any `json:"message"`
	}
	if json.Unmarshal(raw, &e) == nil && e.Message != nil {
		typ := e.Type
		if typ == nil {
			typ = e.Code
		}
		if typ == nil {
			return fmt.Sprint(e.Message)
		}
		return fmt.Sprintf("%v: %v", typ, e.Message)
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

// errorMembers is a flat error event's code and message as one object.
func errorMembers(f *frame) json.RawMessage {
	b, _ := json.Marshal(struct {
		Code    json.RawMessage `json:"code,omitempty"`
		Message json.RawMessage `json:"message,omitempty"`
	}{f.Code, f.Message})
	return b
}

// shortErr is an error's text cut to a line: a JSON error can quote the
// bytes it stopped at.
func shortErr(err error) string {
	s := err.Error()
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}
