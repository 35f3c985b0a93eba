package proxy

import (
	"bytes"
	"mime/multipart"
	"strings"
	"testing"
)

// form builds a multipart/form-data body from name/value pairs; a name
// starting with "@" is a file part.
func form(t *testing.T, pairs ...string) (body []byte, contentType string) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for i := 0; i+1 < len(pairs); i += 2 {
		name, value := pairs[i], pairs[i+1]
		if strings.HasPrefix(name, "@") {
			fw, _ := w.CreateFormFile(name[1:], "audio.wav")
			fw.Write([]byte(value))
			continue
		}
		w.WriteField(name, value)
	}
	w.Close()
	return b.Bytes(), w.FormDataContentType()
}

func TestParseFormFields(t *testing.T) {
	type want struct {
		valid                bool
		model                string
		stream, includeUsage bool
	}
	long := strings.Repeat("m", 5000)
	tests := []struct {
		name  string
		pairs []string
		want  want
	}{
		{"plain", []string{"@file", "RIFF", "model", "whisper", "stream", "true", "stream_include_usage", "true"}, want{true, "whisper", true, true}},
		{"not streamed", []string{"model", "whisper", "@file", "RIFF"}, want{true, "whisper", false, false}},
		{"duplicate fields: the last wins", []string{"model", "a", "stream", "true", "model", "b", "stream", "false"}, want{true, "b", false, false}},
		{"an empty value is absent", []string{"model", "a", "model", ""}, want{true, "", false, false}},
		{"pydantic's strings", []string{"stream", "Yes", "stream_include_usage", "on"}, want{true, "", true, true}},
		{"a bool pydantic refuses", []string{"stream", "maybe"}, want{true, "", false, false}},
		{"a file named model is not the model", []string{"@model", "x", "model", "m"}, want{true, "m", false, false}},
		{"model not UTF-8 is read as Latin-1", []string{"model", "\xff\xfem"}, want{true, "ÿþm", false, false}},
		{"a long model name is cut", []string{"model", long}, want{true, long[:1024], false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, ct := form(t, tt.pairs...)
			if !isMultipartForm([]byte(ct)) {
				t.Fatalf("%q is not taken for a form", ct)
			}
			f := parseFormFields(body, []byte(ct))
			got := want{f.valid, f.model, f.stream, f.includeUsage}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if f.rewritable {
				t.Error("a form is rewritable")
			}
			if tt.name == "a long model name is cut" && f.modelBytes != int64(len(long)) {
				t.Errorf("model name_bytes %d, want %d", f.modelBytes, len(long))
			}
		})
	}
	body, ct := form(t, "model", "m")
	for _, tc := range []struct{ name, body, ct string }{
		{"no boundary", string(body), "multipart/form-data"},
		{"another boundary", string(body), "multipart/form-data; boundary=nope"},
		{"cut off", string(body[:len(body)/2]), ct},
		{"not a form", `{"model":"m"}`, ct},
	} {
		if f := parseFormFields([]byte(tc.body), []byte(tc.ct)); f.valid || f.model != "" {
			t.Errorf("%s: %+v", tc.name, f)
		}
	}
}

// FuzzFormFields: any body and Content-Type is read without panic, and a
// model name is valid UTF-8 of at most audit.MaxModelNameBytes.
func FuzzFormFields(f *testing.F) {
	body, ct := form(&testing.T{}, "model", "m", "stream", "1", "@file", "x")
	f.Add(body, []byte(ct))
	f.Fuzz(func(t *testing.T, body, ct []byte) {
		fields := parseFormFields(body, ct)
		if len(fields.model) > 1024 || !strings.EqualFold(fields.model, strings.ToValidUTF8(fields.model, "?")) {
			t.Fatalf("model %q", fields.model)
		}
	})
}
