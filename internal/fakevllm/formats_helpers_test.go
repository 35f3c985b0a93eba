package fakevllm

import (
	"bytes"
	"encoding/binary"
	"flag"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// updateGolden rewrites testdata/*.golden from the fake's current answers:
// go test ./internal/fakevllm -run Golden -update
var updateGolden = flag.Bool("update", false, "rewrite testdata/*.golden")

// moreVolatile extends normalize (fakevllm_test.go) to the ids of the newer
// formats.
var moreVolatile = regexp.MustCompile(`"(score|transcribe|translate)-[0-9a-f]{32}"`)

func normalizeAll(b []byte) string {
	return normalize([]byte(moreVolatile.ReplaceAllString(string(b), `"$1-ID"`)))
}

// checkGolden compares a normalized answer with testdata/<name>.golden.
func checkGolden(t *testing.T, name string, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *updateGolden {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run with -update to create it): %v", err)
	}
	if got != string(want) {
		t.Errorf("answer differs from %s\n got: %s\nwant: %s", path, got, want)
	}
}

func postJSON(t *testing.T, url, body string) (*http.Response, []byte) {
	t.Helper()
	return do(t, "POST", url, body, map[string]string{"Content-Type": "application/json"})
}

// makeWAV returns a mono 16-bit PCM WAV file of the given length at 16 kHz.
func makeWAV(seconds float64) []byte {
	const rate, bytesPerSample = 16000, 2
	n := int(seconds*rate) * bytesPerSample
	var b bytes.Buffer
	b.WriteString("RIFF")
	binary.Write(&b, binary.LittleEndian, uint32(36+n))
	b.WriteString("WAVEfmt ")
	binary.Write(&b, binary.LittleEndian, uint32(16))
	binary.Write(&b, binary.LittleEndian, uint16(1)) // PCM
	binary.Write(&b, binary.LittleEndian, uint16(1)) // mono
	binary.Write(&b, binary.LittleEndian, uint32(rate))
	binary.Write(&b, binary.LittleEndian, uint32(rate*bytesPerSample))
	binary.Write(&b, binary.LittleEndian, uint16(bytesPerSample))
	binary.Write(&b, binary.LittleEndian, uint16(16))
	b.WriteString("data")
	binary.Write(&b, binary.LittleEndian, uint32(n))
	b.Write(make([]byte, n))
	return b.Bytes()
}

// formField is one multipart part: a file when file is set.
type formField struct {
	name, value string
	file        []byte
}

// multipartBody builds a form body with the parts in order, duplicates
// included, which the SDK cannot send.
func multipartBody(t *testing.T, fields []formField) (string, string) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for _, f := range fields {
		if f.file != nil {
			fw, err := w.CreateFormFile(f.name, "audio.wav")
			if err != nil {
				t.Fatal(err)
			}
			fw.Write(f.file)
			continue
		}
		if err := w.WriteField(f.name, f.value); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String(), w.FormDataContentType()
}

func postForm(t *testing.T, url string, fields []formField) (*http.Response, []byte) {
	t.Helper()
	body, ct := multipartBody(t, fields)
	return do(t, "POST", url, body, map[string]string{"Content-Type": ct})
}

// sseData returns the data payloads of an SSE body.
func sseData(t *testing.T, body []byte) []string {
	t.Helper()
	events, err := readEvents(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("reading SSE: %v\n%s", err, body)
	}
	return events
}

// newTestCtx builds a request for calling Server.Handler without a network.
func newTestCtx(method, path, contentType, body string) *fasthttp.RequestCtx {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(method)
	ctx.Request.SetRequestURI(path)
	if contentType != "" {
		ctx.Request.Header.SetContentType(contentType)
	}
	ctx.Request.SetBodyString(body)
	return &ctx
}
