package fakevllm

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
)

func TestTranscriptionSDK(t *testing.T) {
	_, base := startServer(t, Config{OutputTokens: 5})
	client := sdkClient(base)
	for _, tc := range []struct {
		name    string
		format  openai.AudioResponseFormat
		seconds float64
	}{
		{"json", openai.AudioResponseFormatJSON, 2.5},
		{"text is JSON too", openai.AudioResponseFormatText, 1},
		{"default format", "", 0.2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := client.Audio.Transcriptions.New(context.Background(), openai.AudioTranscriptionNewParams{
				File:           bytes.NewReader(makeWAV(tc.seconds)),
				Model:          testModel,
				ResponseFormat: tc.format,
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Text != GeneratedText(5) {
				t.Errorf("text %q, want %q", res.Text, GeneratedText(5))
			}
			if res.Usage.Type != "duration" || res.Usage.Seconds != math.Ceil(tc.seconds) {
				t.Errorf("usage %+v, want duration %v", res.Usage, math.Ceil(tc.seconds))
			}
			if got := topLevelKeys(t, []byte(res.RawJSON())); strings.Join(got, ",") != "text,usage" {
				t.Errorf("members %v, want text,usage (no model)", got)
			}
		})
	}
	t.Run("verbose_json", func(t *testing.T) {
		res, err := client.Audio.Transcriptions.New(context.Background(), openai.AudioTranscriptionNewParams{
			File:           bytes.NewReader(makeWAV(3)),
			Model:          testModel,
			ResponseFormat: openai.AudioResponseFormatVerboseJSON,
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.Duration != 3 || res.Language != "en" || res.Text != GeneratedText(5) || len(res.Segments) != 1 {
			t.Errorf("verbose answer %s", res.RawJSON())
		}
		if got := topLevelKeys(t, []byte(res.RawJSON())); strings.Join(got, ",") != "duration,language,text,segments,words" {
			t.Errorf("members %v: verbose_json has no usage", got)
		}
	})
}

func TestTranslationSDK(t *testing.T) {
	_, base := startServer(t, Config{OutputTokens: 3})
	client := sdkClient(base)
	res, err := client.Audio.Translations.New(context.Background(), openai.AudioTranslationNewParams{
		File:  bytes.NewReader(makeWAV(1)),
		Model: testModel,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Text != GeneratedText(3) || res.RawJSON() != `{"text":"the model answers "}` {
		t.Errorf("translation %s: want text only, no usage", res.RawJSON())
	}
}

func TestTranscriptionStreamSDK(t *testing.T) {
	_, base := startServer(t, Config{OutputTokens: 4})
	client := sdkClient(base)
	stream := client.Audio.Transcriptions.NewStreaming(context.Background(), openai.AudioTranscriptionNewParams{
		File:  bytes.NewReader(makeWAV(1)),
		Model: testModel,
	})
	var text strings.Builder
	n := 0
	for stream.Next() {
		var c struct {
			Object  string `json:"object"`
			Model   string `json:"model"`
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage json.RawMessage `json:"usage"`
		}
		if err := json.Unmarshal([]byte(stream.Current().RawJSON()), &c); err != nil {
			t.Fatal(err)
		}
		if c.Object != "transcription.chunk" || c.Model != testModel || c.Usage != nil || len(c.Choices) != 1 {
			t.Errorf("chunk %s", stream.Current().RawJSON())
			continue
		}
		text.WriteString(c.Choices[0].Delta.Content)
		if last := n == 3; last != (c.Choices[0].FinishReason != nil) {
			t.Errorf("chunk %d finish_reason %v", n, c.Choices[0].FinishReason)
		}
		n++
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if n != 4 || text.String() != GeneratedText(4) {
		t.Errorf("%d chunks %q", n, text.String())
	}
}

func TestTranscriptionStreamGolden(t *testing.T) {
	_, base := startServer(t, Config{OutputTokens: 2})
	resp, body := postForm(t, base+"/v1/audio/transcriptions", []formField{
		{name: "file", file: makeWAV(1.5)}, {name: "model", value: testModel}, {name: "prompt", value: "a b"},
		{name: "stream", value: "true"}, {name: "stream_include_usage", value: "true"},
		{name: "stream_continuous_usage_stats", value: "true"},
	})
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		t.Fatalf("status %d %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	checkGolden(t, "transcription_stream", normalizeAll(body))
}

type audioChunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage `json:"usage"`
}

func TestAudioStreamUsage(t *testing.T) {
	wav := makeWAV(2.2) // 3 started seconds
	const prompt = 3    // no prompt words
	tests := []struct {
		name       string
		force      ForceUsage
		path       string
		fields     []formField
		usageChunk bool
		perChunk   bool
		object     string
	}{
		{"no usage asked", ForceUsageOff, "/v1/audio/transcriptions",
			[]formField{{name: "stream", value: "1"}}, false, false, "transcription.chunk"},
		{"include usage", ForceUsageOff, "/v1/audio/transcriptions",
			[]formField{{name: "stream", value: "true"}, {name: "stream_include_usage", value: "on"}}, true, false, "transcription.chunk"},
		{"continuous without include is nothing", ForceUsageOff, "/v1/audio/transcriptions",
			[]formField{{name: "stream", value: "true"}, {name: "stream_continuous_usage_stats", value: "true"}}, false, false, "transcription.chunk"},
		{"both", ForceUsageOff, "/v1/audio/translations",
			[]formField{{name: "stream", value: "true"}, {name: "stream_include_usage", value: "true"}, {name: "stream_continuous_usage_stats", value: "true"}}, true, true, "translation.chunk"},
		{"forced final", ForceUsageFinal, "/v1/audio/transcriptions",
			[]formField{{name: "stream", value: "true"}}, true, false, "transcription.chunk"},
		{"forced every still needs continuous", ForceUsageEvery, "/v1/audio/translations",
			[]formField{{name: "stream", value: "true"}}, true, false, "translation.chunk"},
		{"forced with continuous", ForceUsageEvery, "/v1/audio/transcriptions",
			[]formField{{name: "stream", value: "true"}, {name: "stream_continuous_usage_stats", value: "true"}}, true, true, "transcription.chunk"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, base := startServer(t, Config{OutputTokens: 3, ForceIncludeUsage: tc.force})
			resp, body := postForm(t, base+tc.path, append([]formField{{name: "file", file: wav}}, tc.fields...))
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			events := sseData(t, body)
			if events[len(events)-1] != "[DONE]" {
				t.Fatalf("stream does not end with [DONE]: %v", events)
			}
			wantEvents := 3 + 1
			if tc.usageChunk {
				wantEvents++
			}
			if len(events) != wantEvents {
				t.Fatalf("%d events, want %d: %v", len(events), wantEvents, events)
			}
			prefix := "transcribe-"
			if tc.object == "translation.chunk" {
				prefix = "translate-"
			}
			for i, ev := range events[:len(events)-1] {
				var c audioChunk
				if err := json.Unmarshal([]byte(ev), &c); err != nil {
					t.Fatal(err)
				}
				if c.Object != tc.object || !strings.HasPrefix(c.ID, prefix) || c.Model != testModel {
					t.Errorf("event %d: %s", i, ev)
				}
				if i < 3 {
					want := (*usage)(nil)
					if tc.perChunk {
						want = &usage{prompt, i + 1, prompt + i + 1}
					}
					if (c.Usage == nil) != (want == nil) || (want != nil && *c.Usage != *want) {
						t.Errorf("chunk %d usage %v, want %v", i, c.Usage, want)
					}
					continue
				}
				if len(c.Choices) != 0 || c.Usage == nil || *c.Usage != (usage{prompt, 3, prompt + 3}) {
					t.Errorf("usage chunk %s", ev)
				}
			}
		})
	}
}

// TestAudioFormRules: FastAPI's form reading (last duplicate wins, empty is
// absent) and the validator's quirks with stream options.
func TestAudioFormRules(t *testing.T) {
	_, base := startServer(t, Config{OutputTokens: 2})
	wav := makeWAV(1)
	tests := []struct {
		name   string
		path   string
		fields []formField
		status int
		check  func(t *testing.T, body []byte)
	}{
		{"last model wins", "/v1/audio/transcriptions",
			[]formField{{name: "file", file: wav}, {name: "model", value: "nope"}, {name: "model", value: testModel},
				{name: "stream", value: "true"}}, 200,
			func(t *testing.T, body []byte) {
				var c audioChunk
				json.Unmarshal([]byte(sseData(t, body)[0]), &c)
				if c.Model != testModel {
					t.Errorf("model %q", c.Model)
				}
			}},
		{"last model wins the other way", "/v1/audio/transcriptions",
			[]formField{{name: "file", file: wav}, {name: "model", value: testModel}, {name: "model", value: "nope"}}, 404, nil},
		{"empty model is absent: the base model", "/v1/audio/translations",
			[]formField{{name: "file", file: wav}, {name: "model", value: ""}, {name: "stream", value: "yes"}}, 200,
			func(t *testing.T, body []byte) {
				var c audioChunk
				json.Unmarshal([]byte(sseData(t, body)[0]), &c)
				if c.Model != testModel {
					t.Errorf("model %q", c.Model)
				}
			}},
		{"last stream wins", "/v1/audio/transcriptions",
			[]formField{{name: "file", file: wav}, {name: "stream", value: "true"}, {name: "stream", value: "false"}}, 200,
			func(t *testing.T, body []byte) {
				if !json.Valid(body) {
					t.Errorf("not a JSON answer: %s", body)
				}
			}},
		{"last file wins", "/v1/audio/transcriptions",
			[]formField{{name: "file", file: []byte("not audio")}, {name: "file", file: makeWAV(4.5)}}, 200,
			func(t *testing.T, body []byte) {
				if !strings.Contains(string(body), `"seconds":5}`) {
					t.Errorf("answer %s, want the second file's 5 seconds", body)
				}
			}},
		{"stream false with include usage is accepted, not streamed", "/v1/audio/transcriptions",
			[]formField{{name: "file", file: wav}, {name: "stream", value: "false"}, {name: "stream_include_usage", value: "true"}}, 200,
			func(t *testing.T, body []byte) {
				if !json.Valid(body) {
					t.Errorf("not a JSON answer: %s", body)
				}
			}},
		{"include usage false without stream is refused", "/v1/audio/transcriptions",
			[]formField{{name: "file", file: wav}, {name: "stream_include_usage", value: "false"}}, 400,
			func(t *testing.T, body []byte) {
				var e struct {
					Error struct {
						Type  string `json:"type"`
						Param string `json:"param"`
					} `json:"error"`
				}
				json.Unmarshal(body, &e)
				if e.Error.Type != "Bad Request" || e.Error.Param != "stream_include_usage" {
					t.Errorf("error %s", body)
				}
			}},
		{"empty stream option is absent", "/v1/audio/transcriptions",
			[]formField{{name: "file", file: wav}, {name: "stream_continuous_usage_stats", value: ""}}, 200, nil},
		{"timestamp_granularities[] are ignored", "/v1/audio/transcriptions",
			[]formField{{name: "file", file: wav}, {name: "timestamp_granularities[]", value: "word"}, {name: "timestamp_granularities[]", value: "segment"}}, 200, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := postForm(t, base+tc.path, tc.fields)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.check != nil {
				tc.check(t, body)
			}
		})
	}
}

func TestAudioErrors(t *testing.T) {
	_, base := startServer(t, Config{MaxAudioFileMB: 0.05})
	_, strict := startServer(t, Config{RequireModel: true})
	wav := makeWAV(1) // 32 KB, under the 0.05 MiB limit
	tests := []struct {
		name                string
		url                 string
		fields              []formField
		status              int
		errType, msgContain string
	}{
		{"missing file", base + "/v1/audio/transcriptions", []formField{{name: "model", value: testModel}}, 400, "BadRequestError", "body.file"},
		{"file sent as text", base + "/v1/audio/transcriptions", []formField{{name: "file", value: "abc"}}, 422, "Unprocessable Entity", "file-like object"},
		{"not WAV audio", base + "/v1/audio/transcriptions", []formField{{name: "file", file: []byte("ID3 mp3 bytes")}}, 400, "BadRequestError", "Invalid or unsupported audio file."},
		{"truncated WAV", base + "/v1/audio/translations", []formField{{name: "file", file: wav[:20]}}, 400, "BadRequestError", "Invalid or unsupported audio file."},
		{"file over the limit", base + "/v1/audio/transcriptions", []formField{{name: "file", file: makeWAV(2)}}, 400, "BadRequestError", "Maximum file size exceeded (parameter=audio_filesize_mb, value=0.06"},
		{"srt", base + "/v1/audio/transcriptions", []formField{{name: "file", file: wav}, {name: "response_format", value: "srt"}}, 400, "BadRequestError", "Currently only support response_format"},
		{"vtt translation", base + "/v1/audio/translations", []formField{{name: "file", file: wav}, {name: "response_format", value: "vtt"}}, 400, "BadRequestError", "Currently only support response_format"},
		{"diarized_json transcription", base + "/v1/audio/transcriptions", []formField{{name: "file", file: wav}, {name: "response_format", value: "diarized_json"}}, 400, "BadRequestError", "do not support diarized_json"},
		{"diarized_json translation", base + "/v1/audio/translations", []formField{{name: "file", file: wav}, {name: "response_format", value: "diarized_json"}}, 400, "BadRequestError", "body.response_format"},
		{"unknown response_format", base + "/v1/audio/transcriptions", []formField{{name: "file", file: wav}, {name: "response_format", value: "xml"}}, 400, "BadRequestError", "body.response_format"},
		{"verbose_json stream", base + "/v1/audio/transcriptions", []formField{{name: "file", file: wav}, {name: "response_format", value: "verbose_json"}, {name: "stream", value: "true"}}, 400, "BadRequestError", "doesn't support streaming"},
		{"stream not a bool", base + "/v1/audio/transcriptions", []formField{{name: "file", file: wav}, {name: "stream", value: "maybe"}}, 400, "BadRequestError", "body.stream"},
		{"max_completion_tokens not an int", base + "/v1/audio/transcriptions", []formField{{name: "file", file: wav}, {name: "max_completion_tokens", value: "x"}}, 400, "BadRequestError", "body.max_completion_tokens"},
		{"max_completion_tokens zero", base + "/v1/audio/transcriptions", []formField{{name: "file", file: wav}, {name: "max_completion_tokens", value: "0"}}, 400, "BadRequestError", "at least 1"},
		{"unknown model", base + "/v1/audio/transcriptions", []formField{{name: "file", file: wav}, {name: "model", value: "whisper-9"}}, 404, "NotFoundError", "`whisper-9` does not exist"},
		{"missing model when required", strict + "/v1/audio/transcriptions", []formField{{name: "file", file: wav}}, 400, "BadRequestError", "body.model"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := postForm(t, tc.url, tc.fields)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			checkErrorBody(t, body, tc.status, tc.errType, tc.msgContain)
		})
	}
	t.Run("not multipart", func(t *testing.T) {
		resp, body := postJSON(t, base+"/v1/audio/transcriptions", `{"file":"x"}`)
		if resp.StatusCode != 400 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		checkErrorBody(t, body, 400, "BadRequestError", "body.file")
	})
	t.Run("max_completion_tokens caps", func(t *testing.T) {
		resp, body := postForm(t, base+"/v1/audio/transcriptions", []formField{{name: "file", file: wav}, {name: "max_completion_tokens", value: "2"}})
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"text":"the model "`) {
			t.Errorf("status %d: %s", resp.StatusCode, body)
		}
	})
}

func TestWAVDuration(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		want float64
		ok   bool
	}{
		{"one second", makeWAV(1), 1, true},
		{"zero length", makeWAV(0), 0, true},
		{"empty", nil, 0, false},
		{"not RIFF", []byte("RIFX....WAVE"), 0, false},
		{"no fmt", []byte("RIFF\x04\x00\x00\x00WAVEdata\x00\x00\x00\x00"), 0, false},
		{"data size beyond the file is cut", append(makeWAV(0)[:40], 0xff, 0xff, 0, 0, 1, 2, 3, 4), 4.0 / 32000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := WAVDuration(tc.b)
			if (err == nil) != tc.ok || got != tc.want {
				t.Errorf("WAVDuration = %v, %v; want %v ok=%v", got, err, tc.want, tc.ok)
			}
		})
	}
}

func FuzzWAVDuration(f *testing.F) {
	f.Add(makeWAV(0.01))
	f.Add([]byte("RIFF\x00\x00\x00\x00WAVEfmt \xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := WAVDuration(b)
		if err == nil && (d < 0 || math.IsNaN(d) || math.IsInf(d, 0)) {
			t.Fatalf("duration %v", d)
		}
	})
}
