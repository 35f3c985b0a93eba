package fakevllm

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"mime/multipart"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// Transcriptions and translations (docs/vllm-wire-format.md, section d).
//
// The request is multipart/form-data, read as FastAPI reads a pydantic form
// model: the last of duplicate fields wins, an empty field is absent (its
// default), booleans and integers are pydantic's lax conversions of the
// field's text. file is required and must be a file part.
//
// Non-streamed answers are JSON whatever response_format says ("text" too):
//
//	transcription json|text  {"text":"…","usage":{"type":"duration","seconds":N}}
//	translation   json|text  {"text":"…"}                (no usage at all)
//	verbose_json             {"duration":d,"language":"en","text":"…","segments":[…],"words":null}
//
// srt and vtt are refused (400), as is diarized_json, which the fake's model
// does not support. A stream is SSE, every event `data: {…}`:
//
//	{"id":"transcribe-…","object":"transcription.chunk","created":…,"model":…,
//	 "choices":[{"delta":{"content":"…"}}]}                    content chunks
//	…"choices":[{"delta":{"content":"…"},"finish_reason":"stop","stop_reason":null}]}  the last one
//	{"id":…,"object":…,"created":…,"model":…,"choices":[],
//	 "usage":{"prompt_tokens":P,"total_tokens":T,"completion_tokens":C}}  with stream_include_usage
//	[DONE]
//
// Stream usage counts tokens, not seconds; per-chunk usage needs
// stream_continuous_usage_stats as well. --enable-force-include-usage
// (Config.ForceIncludeUsage, any mode) turns on the final usage chunk only.
// The stream's model is the request's model or the first served name; a
// non-streamed answer has no model member.
//
// The fake decodes only PCM WAV ("Invalid or unsupported audio file."
// otherwise); the audio's duration is its data size over its byte rate. A
// request's prompt tokens are the words of its prompt field plus one per
// started second of audio; the text is the fake's usual output tokens.

type audioTask uint8

const (
	taskTranscribe audioTask = iota
	taskTranslate
)

// defaultMaxAudioFileMB is VLLM_MAX_AUDIO_CLIP_FILESIZE_MB's default.
const defaultMaxAudioFileMB = 25

// audioLanguage is the language the fake reports when the request names
// none (Whisper's validate_language defaults to English).
const audioLanguage = "en"

// audioRequest is what the fake reads from the form.
type audioRequest struct {
	model          string
	modelJSON      []byte
	language       string
	prompt         string
	responseFormat string
	stream         bool
	includeUsage   bool
	continuous     bool
	maxTokens      int
	temperature    float64
	seconds        float64
	promptTokens   int
}

// lastField is FastAPI's _get_multidict_value for a scalar form field: the
// last value, and "" counts as absent.
func lastField(f *multipart.Form, name string) (string, bool) {
	vs := f.Value[name]
	if len(vs) == 0 || vs[len(vs)-1] == "" {
		return "", false
	}
	return vs[len(vs)-1], true
}

// formBool converts a form field as pydantic's lax bool does.
func formBool(f *multipart.Form, name string) (val, set bool, aerr *apiError) {
	s, ok := lastField(f, name)
	if !ok {
		return false, false, nil
	}
	switch strings.ToLower(s) {
	case "0", "f", "n", "no", "off", "false":
		return false, true, nil
	case "1", "t", "y", "yes", "on", "true":
		return true, true, nil
	}
	return false, true, badRequest("Input should be a valid boolean, unable to interpret input: body.%s", name)
}

func (s *Server) writeErrorParam(ctx *fasthttp.RequestCtx, status int, typ, msg, param string) {
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	b := ctx.Response.SwapBody(nil)[:0]
	b = append(b, `{"error":{"message":`...)
	b = appendJSONString(b, msg)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, typ)
	b = append(b, `,"param":`...)
	b = appendJSONString(b, param)
	b = append(b, `,"code":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	ctx.Response.SwapBody(append(b, "}}"...))
}

// parseAudioForm reads and validates the form as TranscriptionRequest or
// TranslationRequest, then the file as read_upload_with_limit does.
func (s *Server) parseAudioForm(ctx *fasthttp.RequestCtx, task audioTask) (audioRequest, []byte, bool) {
	var r audioRequest
	fail := func(aerr *apiError) (audioRequest, []byte, bool) {
		s.writeError(ctx, aerr.status, aerr.typ, aerr.msg)
		return r, nil, false
	}
	form, err := ctx.MultipartForm()
	if err != nil {
		// Starlette reads an empty form from a body that is not multipart,
		// so the required file is missing.
		form = &multipart.Form{}
	}
	// The model's before-validators run first: a text "file" is an
	// HTTPException (422 through vLLM's handler), then the stream options.
	if _, isText := form.Value["file"]; isText && len(form.File["file"]) == 0 {
		return fail(&apiError{fasthttp.StatusUnprocessableEntity, "Unprocessable Entity", "Expected 'file' to be a file-like object, not 'str'."})
	}
	// The validator tests the raw form text with Python's bool(): any
	// non-empty option is true, and any non-empty stream passes, even
	// "false". So stream_include_usage=false without stream is refused,
	// while stream=false with stream_include_usage=true is accepted (and not
	// streamed).
	_, streamSet := lastField(form, "stream")
	for _, opt := range []string{"stream_include_usage", "stream_continuous_usage_stats"} {
		if _, set := lastField(form, opt); set && !streamSet {
			s.writeErrorParam(ctx, fasthttp.StatusBadRequest, "Bad Request",
				"1 validation error:\n  Value error, Stream options can only be defined when `stream=True`. (parameter="+opt+")", opt)
			return r, nil, false
		}
	}
	files := form.File["file"]
	if len(files) == 0 {
		return fail(badRequest("Field required: body.file"))
	}
	fh := files[len(files)-1]

	r.model, _ = lastField(form, "model")
	r.language, _ = lastField(form, "language")
	r.prompt, _ = lastField(form, "prompt")
	r.responseFormat = "json"
	if rf, ok := lastField(form, "response_format"); ok {
		r.responseFormat = rf
	}
	switch r.responseFormat {
	case "json", "text", "srt", "verbose_json", "vtt":
	case "diarized_json":
		if task == taskTranslate {
			return fail(badRequest("Input should be 'json', 'text', 'srt', 'verbose_json' or 'vtt': body.response_format"))
		}
	default:
		if task == taskTranslate {
			return fail(badRequest("Input should be 'json', 'text', 'srt', 'verbose_json' or 'vtt': body.response_format"))
		}
		return fail(badRequest("Input should be 'json', 'text', 'srt', 'verbose_json', 'vtt' or 'diarized_json': body.response_format"))
	}
	var aerr *apiError
	if r.stream, _, aerr = formBool(form, "stream"); aerr != nil {
		return fail(aerr)
	}
	if r.includeUsage, _, aerr = formBool(form, "stream_include_usage"); aerr != nil {
		return fail(aerr)
	}
	if r.continuous, _, aerr = formBool(form, "stream_continuous_usage_stats"); aerr != nil {
		return fail(aerr)
	}
	if mt, ok := lastField(form, "max_completion_tokens"); ok {
		n, err := strconv.Atoi(mt)
		if err != nil {
			return fail(badRequest("Input should be a valid integer, unable to parse string as an integer: body.max_completion_tokens"))
		}
		if n < 1 {
			// SamplingParams refuses it once get_max_tokens has passed it on.
			return fail(badRequest("max_tokens must be at least 1, got %d.", n))
		}
		r.maxTokens = n
	}
	if t, ok := lastField(form, "temperature"); ok {
		f, err := strconv.ParseFloat(t, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return fail(badRequest("Input should be a valid number, unable to parse string as a number: body.temperature"))
		}
		r.temperature = f
	}

	// read_upload_with_limit: the size known from the upload is checked
	// first, so the error names the whole file's size.
	limit := int64(s.cfg.MaxAudioFileMB * (1 << 20))
	if fh.Size > limit {
		msg := "Maximum file size exceeded (parameter=audio_filesize_mb, value=" +
			string(appendPyFloat(nil, float64(fh.Size)/(1<<20))) + ")"
		s.writeErrorParam(ctx, fasthttp.StatusBadRequest, "BadRequestError", msg, "audio_filesize_mb")
		return r, nil, false
	}
	f, err := fh.Open()
	if err != nil {
		return fail(badRequest("Invalid or unsupported audio file."))
	}
	defer f.Close()
	audio := make([]byte, fh.Size)
	if _, err := io.ReadFull(f, audio); err != nil {
		return fail(badRequest("Invalid or unsupported audio file."))
	}
	return r, audio, true
}

// WAVDuration returns the duration in seconds of a PCM WAV file, the only
// audio the fake decodes.
func WAVDuration(b []byte) (float64, error) {
	bad := errors.New("not a RIFF/WAVE file")
	if len(b) < 12 || string(b[:4]) != "RIFF" || string(b[8:12]) != "WAVE" {
		return 0, bad
	}
	var byteRate uint32
	for p := 12; p+8 <= len(b); {
		id, size := string(b[p:p+4]), binary.LittleEndian.Uint32(b[p+4:p+8])
		p += 8
		switch id {
		case "fmt ":
			if size < 16 || p+16 > len(b) {
				return 0, bad
			}
			byteRate = binary.LittleEndian.Uint32(b[p+8 : p+12])
		case "data":
			if byteRate == 0 {
				return 0, bad
			}
			n := min(int(size), len(b)-p)
			return float64(n) / float64(byteRate), nil
		}
		p += int(size) + int(size&1)
	}
	return 0, bad
}

func (s *Server) audio(ctx *fasthttp.RequestCtx, task audioTask, h *hooks) {
	start := time.Now()
	r, audio, ok := s.parseAudioForm(ctx, task)
	if !ok {
		return
	}
	// _create_speech_to_text, in its order.
	if r.model != "" {
		if aerr := s.checkModel(r.model); aerr != nil {
			s.writeError(ctx, aerr.status, aerr.typ, aerr.msg)
			return
		}
	} else if s.cfg.RequireModel {
		s.writeError(ctx, fasthttp.StatusBadRequest, "BadRequestError", "Field required: body.model")
		return
	}
	modelName := r.model
	if modelName == "" {
		modelName = s.cfg.Model
	}
	switch r.responseFormat {
	case "text", "json", "verbose_json":
	case "diarized_json":
		s.writeError(ctx, fasthttp.StatusBadRequest, "BadRequestError", "Currently do not support diarized_json for "+modelName)
		return
	default:
		s.writeError(ctx, fasthttp.StatusBadRequest, "BadRequestError",
			"Currently only support response_format: `text`, `json`, `verbose_json` or `diarized_json`")
		return
	}
	if r.responseFormat == "verbose_json" && r.stream {
		s.writeError(ctx, fasthttp.StatusBadRequest, "BadRequestError", "verbose_json format doesn't support streaming case")
		return
	}
	var err error
	if r.seconds, err = WAVDuration(audio); err != nil {
		s.writeError(ctx, fasthttp.StatusBadRequest, "BadRequestError", "Invalid or unsupported audio file.")
		return
	}
	if r.language == "" {
		r.language = audioLanguage
	}
	r.modelJSON = appendJSONString(nil, modelName)
	r.promptTokens = max(CountWords([]byte(r.prompt))+int(math.Ceil(r.seconds)), 1)
	if s.cfg.ForceIncludeUsage != ForceUsageOff {
		r.includeUsage = true
	}
	r.continuous = r.includeUsage && r.continuous

	n, finish := s.plan(genRequest{promptTokens: r.promptTokens, maxTokens: r.maxTokens})
	ttft, itl := s.cfg.TTFT, s.cfg.InterTokenLatency
	if h.ttft >= 0 {
		ttft = h.ttft
	}
	if h.itl >= 0 {
		itl = h.itl
	}
	s.promptTokens.Add(int64(r.promptTokens))
	if r.stream {
		st := &audioStream{s: s, task: task, r: r, n: n, finish: finish, ttft: ttft, itl: itl, start: start}
		s.streamsStarted.Add(1)
		ctx.SetContentType("text/event-stream; charset=utf-8")
		ctx.Response.ImmediateHeaderFlush = true
		ctx.SetBodyStreamWriter(st.run)
		return
	}
	if (ttft > 0 || itl > 0) && !s.sleep(ttft+time.Duration(n)*itl) {
		ctx.SetConnectionClose()
		s.writeError(ctx, fasthttp.StatusServiceUnavailable, "ServiceUnavailableError", "server is shutting down")
		return
	}
	text := appendTokens(nil, n)
	ctx.SetContentType("application/json")
	b := ctx.Response.SwapBody(nil)[:0]
	if r.responseFormat == "verbose_json" {
		b = appendVerboseAudio(b, &r, text, n)
	} else {
		b = append(b, `{"text":`...)
		b = appendJSONString(b, string(text))
		if task == taskTranscribe {
			// Rounded up, "as per openAI specs".
			b = append(b, `,"usage":{"type":"duration","seconds":`...)
			b = strconv.AppendInt(b, int64(math.Ceil(r.seconds)), 10)
			b = append(b, '}')
		}
		b = append(b, '}')
	}
	ctx.Response.SwapBody(b)
	s.completionTokens.Add(int64(n))
	s.recordE2E(start)
}

// appendVerboseAudio writes TranscriptionResponseVerbose (or the
// translation one, the same members): one segment holding the whole text.
func appendVerboseAudio(b []byte, r *audioRequest, text []byte, n int) []byte {
	b = append(b, `{"duration":`...)
	b = appendPyFloat(b, r.seconds)
	b = append(b, `,"language":`...)
	b = appendJSONString(b, r.language)
	b = append(b, `,"text":`...)
	b = appendJSONString(b, string(text))
	b = append(b, `,"segments":[{"id":0,"avg_logprob":-0.25,"compression_ratio":`...)
	b = appendPyFloat(b, compressionRatio(text))
	b = append(b, `,"end":`...)
	b = appendPyFloat(b, r.seconds)
	b = append(b, `,"no_speech_prob":null,"seek":0,"start":0.0,"temperature":`...)
	b = appendPyFloat(b, r.temperature)
	b = append(b, `,"text":`...)
	b = appendJSONString(b, string(text))
	b = append(b, `,"tokens":[`...)
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(OutputTokenID(i)), 10)
	}
	return append(b, `]}],"words":null}`...)
}

// compressionRatio is vLLM's len(text) / len(zlib.compress(text)).
func compressionRatio(text []byte) float64 {
	var buf bytes.Buffer
	w := zlib.NewWriter(&buf)
	w.Write(text)
	w.Close()
	return float64(len(text)) / float64(buf.Len())
}

// audioStream writes a transcription or translation SSE stream.
type audioStream struct {
	s         *Server
	task      audioTask
	r         audioRequest
	n         int
	finish    string
	ttft, itl time.Duration
	start     time.Time
}

func (st *audioStream) run(w *bufio.Writer) {
	s := st.s
	sent := 0
	defer func() { s.completionTokens.Add(int64(sent)) }()
	id := []byte("transcribe-")
	object := "transcription.chunk"
	if st.task == taskTranslate {
		id, object = []byte("translate-"), "translation.chunk"
	}
	id = appendHexID(id)
	created := st.start.Unix()
	head := func(b []byte) []byte {
		b = append(b, `data: {"id":"`...)
		b = append(b, id...)
		b = append(b, `","object":"`+object+`","created":`...)
		b = strconv.AppendInt(b, created, 10)
		b = append(b, `,"model":`...)
		return append(b, st.r.modelJSON...)
	}
	send := func(ev []byte) bool {
		if _, err := w.Write(ev); err != nil {
			s.streamsAborted.Add(1)
			return false
		}
		if err := w.Flush(); err != nil {
			s.streamsAborted.Add(1)
			return false
		}
		return true
	}
	if !s.sleep(st.ttft) {
		return
	}
	buf := make([]byte, 0, 256)
	for i := range st.n {
		if i > 0 && !s.sleep(st.itl) {
			return
		}
		b := head(buf[:0])
		b = append(b, `,"choices":[{"delta":{"content":`...)
		b = appendJSONString(b, Token(i))
		b = append(b, '}')
		if i == st.n-1 {
			b = append(b, `,"finish_reason":"`...)
			b = append(b, st.finish...)
			b = append(b, `","stop_reason":null`...)
		}
		b = append(b, "}]"...)
		if st.r.continuous {
			b = append(b, `,"usage":`...)
			b = appendTokenUsage(b, st.r.promptTokens, i+1)
		}
		b = append(b, "}\n\n"...)
		if !send(b) {
			return
		}
		sent++
		buf = b
	}
	if st.r.includeUsage {
		b := head(buf[:0])
		b = append(b, `,"choices":[],"usage":`...)
		b = appendTokenUsage(b, st.r.promptTokens, sent)
		if !send(append(b, "}\n\n"...)) {
			return
		}
	}
	if send(doneEvent) {
		s.streamsCompleted.Add(1)
		s.recordE2E(st.start)
	}
}

// appendTokenUsage appends a UsageInfo dumped with exclude_unset: the three
// counts, in the model's field order.
func appendTokenUsage(b []byte, prompt, completion int) []byte {
	return appendUsage(b, prompt, completion, false)
}
