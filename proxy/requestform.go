package proxy

import (
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"strings"
	"unicode/utf8"
)

// vLLM's transcription and translation endpoints take a multipart form
// (Annotated[TranscriptionRequest, Form()]), not JSON. FastAPI reads a
// scalar form field with values.get(name), and Starlette's multidict keeps
// the last of duplicate names; an empty value counts as absent (the
// field's default); a value that is not valid UTF-8 is decoded as Latin-1.
// docs/vllm-wire-format.md, section d, cites the files.

// maxFormFieldBytes bounds the bytes of a form field read: model names are
// cut at audit.MaxModelNameBytes anyway, and a bool is a few bytes.
const maxFormFieldBytes = 4 << 10

// isMultipartForm reports whether a Content-Type is multipart/form-data.
func isMultipartForm(contentType []byte) bool {
	mt, _, _ := bytes.Cut(contentType, []byte(";"))
	return strings.EqualFold(string(bytes.TrimSpace(mt)), "multipart/form-data")
}

// parseFormFields reads requestFields from a multipart/form-data body: the
// model, stream and stream_include_usage fields, as vLLM reads them. A form
// is never rewritten (usage is asked for with a field of its own, and a
// rewrite would move the client's bytes), and valid is false when the body
// does not parse as a form, as Starlette would refuse it.
func parseFormFields(body, contentType []byte) (f requestFields) {
	boundary := formBoundary(contentType)
	if boundary == "" {
		return requestFields{}
	}
	if !bytes.Contains(body, []byte("--"+boundary+"--")) {
		return requestFields{} // no close delimiter: cut off (Go's reader takes that for the end)
	}
	return readFormFields(multipart.NewReader(bytes.NewReader(body), boundary))
}

// formBoundary returns a multipart Content-Type's boundary, "" if it has
// none or does not parse.
func formBoundary(contentType []byte) string {
	_, params, err := mime.ParseMediaType(string(contentType))
	if err != nil {
		return ""
	}
	return params["boundary"]
}

// readFormFields reads requestFields from the parts r reads, to the close
// delimiter. It reads a part's value only for the fields vLLM acts on, so a
// form read from a stream (bigbody.go) is not held.
func readFormFields(r *multipart.Reader) (f requestFields) {
	var model, stream, includeUsage []byte
	var modelBytes int64
	for {
		part, err := r.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return requestFields{}
		}
		name := part.FormName()
		if part.FileName() != "" || (name != "model" && name != "stream" && name != "stream_include_usage") {
			continue // NextRawPart skips what is left of it
		}
		v, n, err := readFormValue(part)
		if err != nil {
			return requestFields{}
		}
		if len(v) == 0 {
			v = nil // empty: the default, as if absent
		}
		switch name {
		case "model":
			model, modelBytes = v, n
		case "stream":
			stream = v
		case "stream_include_usage":
			includeUsage = v
		}
	}
	f.valid = true
	if model != nil {
		f.model, f.modelBytes = cutModelName(decodeFormValue(model))
		if modelBytes > int64(len(model)) {
			f.modelBytes = modelBytes
		}
	}
	f.stream = formBool(stream)
	f.includeUsage = formBool(includeUsage)
	return f
}

// readFormValue reads a form field's value, at most maxFormFieldBytes of
// it, and returns its whole length.
func readFormValue(part *multipart.Part) ([]byte, int64, error) {
	v, err := io.ReadAll(io.LimitReader(part, maxFormFieldBytes))
	if err != nil {
		return nil, 0, err
	}
	rest, err := io.Copy(io.Discard, part)
	return v, int64(len(v)) + rest, err
}

// formBool reads a form field as pydantic reads a bool from a string; nil
// (absent) and a value pydantic refuses (vLLM answers 400) are false.
func formBool(v []byte) bool {
	if v == nil || len(v) > 8 {
		return false
	}
	switch strings.ToLower(string(v)) {
	case "1", "t", "y", "yes", "on", "true":
		return true
	}
	return false
}

// decodeFormValue decodes a text part's bytes as Starlette does
// (starlette/formparsers.py, _user_safe_decode): as UTF-8, and when they
// are not valid UTF-8, the whole value as Latin-1, one character a byte.
func decodeFormValue(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = utf8.AppendRune(out, rune(c))
	}
	return string(out)
}
