package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/auditproxy/auditproxy/change"
	"github.com/auditproxy/auditproxy/gpu"
	"github.com/auditproxy/auditproxy/hashing"
	"github.com/auditproxy/auditproxy/internal/fakevllm"
	"github.com/auditproxy/auditproxy/internal/testutil"
)

const fakeModel = "meta-llama/Llama-3.1-8B-Instruct"

// captureLog is a real sidecar's log with captured payloads, built once by
// newCaptureLog: a model whose weights were hashed (model_changed), vLLM's
// version (upstream_version), a signed change record about the model (where
// ssh-keygen is installed), and one request of each kind below.
type captureLog struct {
	spool, pub, idFile, strangerFile string
	checksum                         string // the model's weights checksum
	signed                           bool   // a signed change record is in the log
	// allowed is the allowed-signers file the sidecar checked the record
	// with; relabelled lists the actor's key under another identity.
	allowed, relabelled string
}

// captureRequests are the requests newCaptureLog sends, by request id.
var captureRequests = []struct{ id, path, body string }{
	{"chat-stream", "/v1/chat/completions", `{"model":"` + fakeModel + `","messages":[{"role":"user","content":"hi \u001b[2J there"}],"stream":true,"max_tokens":6}`},
	{"responses-stream", "/v1/responses", `{"model":"` + fakeModel + `","input":"hi","stream":true,"max_output_tokens":6}`},
	{"messages-stream", "/v1/messages", `{"model":"` + fakeModel + `","max_tokens":6,"messages":[{"role":"user","content":"hi"}],"stream":true}`},
	{"completion", "/v1/completions", `{"model":"` + fakeModel + `","prompt":"once","max_tokens":6}`},
	// A model name that would clear the screen and set the window title.
	{"hostile-model", "/v1/chat/completions", `{"model":"\u001b]0;pwned\u0007\u001b[2J","messages":[{"role":"user","content":"hi"}]}`},
}

func newCaptureLog(t *testing.T, serveArgs ...string) captureLog {
	t.Helper()
	dir := t.TempDir()
	modelDir := filepath.Join(dir, "model")
	os.MkdirAll(modelDir, 0o755)
	os.WriteFile(filepath.Join(modelDir, "config.json"), []byte(`{"model_type":"llama"}`), 0o644)
	os.WriteFile(filepath.Join(modelDir, "model.safetensors"), bytes.Repeat([]byte("w"), 1<<16), 0o644)
	var sum bytes.Buffer
	if code := run([]string{"checksum", modelDir}, &sum, io.Discard); code != 0 {
		t.Fatalf("checksum exited %d", code)
	}
	lines := strings.Split(strings.TrimSpace(sum.String()), "\n")
	l := captureLog{checksum: strings.TrimPrefix(lines[len(lines)-1], "model checksum: ")}

	auditor, _ := age.GenerateX25519Identity()
	stranger, _ := age.GenerateX25519Identity()
	l.idFile, l.strangerFile = filepath.Join(dir, "auditor.key"), filepath.Join(dir, "stranger.key")
	os.WriteFile(l.idFile, []byte(auditor.String()+"\n"), 0o600)
	os.WriteFile(l.strangerFile, []byte(stranger.String()+"\n"), 0o600)

	_, upstream := startFake(t, fakevllm.Config{Root: modelDir})
	dataDir := filepath.Join(dir, "data")
	args := append([]string{"--data-dir", dataDir, "--log-level", "warn", "--capture-payloads", "--payload-recipient", auditor.Recipient().String()}, serveArgs...)
	_, sshErr := exec.LookPath("ssh-keygen")
	var sarah, marcus testutil.SSHKey
	if l.signed = sshErr == nil; l.signed {
		sarah, marcus = testutil.NewSSHKey(t, "sarah"), testutil.NewSSHKey(t, "marcus")
		l.allowed, l.relabelled = filepath.Join(dir, "allowed_signers"), filepath.Join(dir, "relabelled_signers")
		os.WriteFile(l.allowed, []byte("sarah@example.com "+sarah.Public+"\nmarcus@example.com "+marcus.Public+"\n"), 0o644)
		os.WriteFile(l.relabelled, []byte("mallory@example.com "+sarah.Public+"\nmarcus@example.com "+marcus.Public+"\n"), 0o644)
		args = append(args, "--allowed-signers", l.allowed, "--approval-required", "model_rollout")
	}
	p := startServe(t, upstream, nil, args...)
	waitUntil(t, "model_changed and upstream_version in the log", 10*time.Second, func() bool {
		var out bytes.Buffer
		run([]string{"export", "--data-dir", dataDir}, &out, io.Discard)
		return bytes.Contains(out.Bytes(), []byte(`"type":"model_changed"`)) && bytes.Contains(out.Bytes(), []byte(`"type":"upstream_version"`))
	})
	if l.signed {
		record := filepath.Join(dir, "rollout.json")
		var errOut bytes.Buffer
		if code := run([]string{"annotate", "prepare", "--out", record, "--type", "model_rollout", "--resource", fakeModel,
			"--actor", "sarah@example.com", "--approver", "marcus@example.com", "--ticket", "OPS-2891", "--mode", "planned",
			"--justification", "quarterly refresh"}, io.Discard, &errOut); code != 0 {
			t.Fatalf("annotate prepare: %d %s", code, errOut.String())
		}
		var out bytes.Buffer
		if code := run([]string{"annotate", "submit", "--record", record, "--admin", "http://" + p.admin,
			"--token-file", filepath.Join(dataDir, "admin.token"),
			"--signature", sarah.SignFile(t, record, change.Namespace)}, &out, &errOut); code != 1 {
			// Two signatures are needed; one file name per signer.
			t.Fatalf("annotate submit with the actor's signature alone: %d %s %s", code, out.String(), errOut.String())
		}
		sarahSig := sarah.SignFile(t, record, change.Namespace)
		os.Rename(sarahSig, record+".sarah.sig")
		marcusSig := marcus.SignFile(t, record, change.Namespace)
		out.Reset()
		errOut.Reset()
		if code := run([]string{"annotate", "submit", "--record", record, "--admin", "http://" + p.admin,
			"--token-file", filepath.Join(dataDir, "admin.token"),
			"--signature", record + ".sarah.sig", "--signature", marcusSig}, &out, &errOut); code != 0 {
			t.Fatalf("annotate submit: %d %s %s", code, out.String(), errOut.String())
		}
	}
	for _, r := range captureRequests {
		if code, answer := postJSON(t, p.listen, r.path, r.id, r.body); code == 0 {
			t.Fatalf("%s: %s", r.id, answer)
		}
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	l.spool, l.pub = filepath.Join(dataDir, "spool"), filepath.Join(dataDir, "signing.key.pub")
	return l
}

// TestShowIsTheWholeAnswer: show answers which model version answered, on
// which GPU and vLLM version, who asked, what was sent and what came back,
// each stream re-assembled into its answer text, nothing raw reaching a
// terminal; --json, --raw and --out-dir give the same in other forms.
func TestShowIsTheWholeAnswer(t *testing.T) {
	l := newCaptureLog(t)
	show := func(t *testing.T, id string, extra ...string) (string, string, int) {
		t.Helper()
		var out, errOut bytes.Buffer
		code := run(append(append([]string{"show", "--request-id", id}, extra...), l.spool), &out, &errOut)
		return out.String(), errOut.String(), code
	}
	annotation := `  change record in effect: none recorded in the logs read`
	if l.signed {
		annotation = "  change record in effect: model_rollout of " + fakeModel + " by sarah@example.com, approved by marcus@example.com, ticket OPS-2891, planned\n    record "
	}
	if l.signed {
		t.Run("the change record's signatures", func(t *testing.T) {
			for _, tc := range []struct {
				flags []string
				want  string
			}{
				{nil, "    as recorded: its signatures are not checked without --allowed-signers\n"},
				{[]string{"--allowed-signers", l.allowed}, "    signatures checked with --allowed-signers: signed by whom it names\n"},
				{[]string{"--allowed-signers", l.relabelled}, "    SIGNATURES DO NOT VERIFY with --allowed-signers: "},
			} {
				out, errOut, code := show(t, "completion", tc.flags...)
				if code != 0 || !strings.Contains(out, tc.want) {
					t.Errorf("show %q: %d, want %q\n%s%s", tc.flags, code, tc.want, out, errOut)
				}
			}
		})
	}
	common := []string{
		"model \"" + fakeModel + "\"\n  weights checksum: " + l.checksum + "\n",
		"  rollout in effect: model_changed at ",
		"weights " + l.checksum + ", dir ",
		annotation,
		"gpu: unknown (NVML not available to the sidecar: the event's gpu is null)\n",
		"vLLM version: 0.11.0 (upstream_version at ",
		"  api_key_id none (the request carried no API key)\n",
		"  request: ", " matches the event\n  response: ",
		"  in the signed log: event ",
	}
	for _, tc := range []struct {
		id   string
		want []string
	}{
		{"chat-stream", []string{"  POST /v1/chat/completions, streamed, status 200 (ok)\n",
			"--- request (JSON, indented) ---\n{\n  \"model\": \"" + fakeModel + "\",\n",
			`"content": "hi \u001b[2J there"`, // the request's escape stays JSON text
			`--- answer \(chat completions API, streamed, \d+ events re-assembled\) ---\nthe model answers with a \w+ \nfinish: length\n--- end ---\n`}},
		{"responses-stream", []string{"  POST /v1/responses, streamed, status 200 (ok)\n",
			`--- answer \(responses API, streamed, \d+ events re-assembled\) ---\nthe model answers with a \w+ \nfinish: incomplete \(max_output_tokens\)\n--- end ---\n`}},
		{"messages-stream", []string{`--- answer \(messages API, streamed, \d+ events re-assembled\) ---\nthe model answers with a \w+ \nfinish: max_tokens\n--- end ---\n`}},
		{"completion", []string{"  POST /v1/completions, not streamed, status 200 (ok)\n", "latency: total ", "ttft n/a (not streamed)",
			"--- response (JSON, indented) ---\n{\n", `--- answer \(completions API, not streamed\) ---\nthe model answers with a \w+ \nfinish: length\n`}},
	} {
		t.Run(tc.id, func(t *testing.T) {
			out, errOut, code := show(t, tc.id, "--identity", l.idFile, "--pubkey", l.pub)
			if code != 0 {
				t.Fatalf("show: %d\n%s%s", code, out, errOut)
			}
			for _, w := range common {
				if !strings.Contains(out, w) {
					t.Errorf("show does not say %q:\n%s", w, out)
				}
			}
			// The last wanted line is a pattern: the fake's words vary.
			for i, w := range tc.want {
				if i == len(tc.want)-1 && !regexp.MustCompile(w).MatchString(out) || i < len(tc.want)-1 && !strings.Contains(out, w) {
					t.Errorf("show does not say %q:\n%s", w, out)
				}
			}
			if !regexp.MustCompile(`\ntokens: in \d+, out 6, finish_reason \S+\n`).MatchString(out) {
				t.Errorf("show does not give the token counts:\n%s", out)
			}
			if strings.ContainsAny(out, "\x1b\a") {
				t.Errorf("show printed a raw control character:\n%q", out)
			}
		})
	}

	t.Run("a hostile model name is escaped", func(t *testing.T) {
		out, errOut, code := show(t, "hostile-model", "--identity", l.idFile)
		if code != 0 || !strings.Contains(out, `model "\x1b]0;pwned\x07\x1b[2J"`) || strings.ContainsAny(out, "\x1b\a") ||
			!strings.Contains(out, "rollout in effect: none recorded in the logs read") || !strings.Contains(out, "status 404 (upstream_error, NotFoundError)") {
			t.Errorf("show: %d\n%q%s", code, out, errOut)
		}
	})

	t.Run("json", func(t *testing.T) {
		out, errOut, code := show(t, "chat-stream", "--identity", l.idFile, "--json")
		var rep struct {
			Event struct {
				RequestID string `json:"request_id"`
			} `json:"event"`
			InEffect struct {
				Rollout     struct{ Checksum string }       `json:"rollout"`
				GPU         *struct{}                       `json:"gpu"`
				VLLMVersion struct{ Version string }        `json:"vllm_version"`
				Annotation  *struct{ Ticket, Actor string } `json:"annotation"`
			} `json:"in_effect"`
			Request struct {
				Check string
				JSON  json.RawMessage
			}
			Response struct {
				Check  string
				Answer struct {
					API     string
					Choices []struct{ Text string }
				}
			}
		}
		if code != 0 || strings.Count(out, "\n") != 1 || json.Unmarshal([]byte(out), &rep) != nil {
			t.Fatalf("show --json: %d %s %s", code, out, errOut)
		}
		if rep.Event.RequestID != "chat-stream" || rep.InEffect.Rollout.Checksum != l.checksum || rep.InEffect.GPU != nil ||
			rep.InEffect.VLLMVersion.Version != "0.11.0" || (rep.InEffect.Annotation != nil) != l.signed ||
			rep.Request.Check != "matches" || !bytes.Contains(rep.Request.JSON, []byte(`"stream":true`)) || rep.Response.Check != "matches" ||
			rep.Response.Answer.API != "chat completions" || len(rep.Response.Answer.Choices) != 1 || !strings.HasPrefix(rep.Response.Answer.Choices[0].Text, "the model answers with a ") {
			t.Errorf("show --json: %+v\n%s", rep, out)
		}
	})

	t.Run("raw and out-dir", func(t *testing.T) {
		out, _, code := show(t, "chat-stream", "--identity", l.idFile, "--raw")
		if code != 0 || !strings.Contains(out, "--- response body (exact bytes) ---\ndata: {") || !strings.Contains(out, "\n\ndata: [DONE]\n\n") {
			t.Errorf("show --raw: %d\n%s", code, out)
		}
		dir := filepath.Join(t.TempDir(), "bodies")
		out, _, code = show(t, "chat-stream", "--identity", l.idFile, "--out-dir", dir)
		req, _ := os.ReadFile(filepath.Join(dir, "request.body"))
		resp, _ := os.ReadFile(filepath.Join(dir, "response.body"))
		text, _ := os.ReadFile(filepath.Join(dir, "transcript.txt"))
		if code != 0 || !strings.Contains(out, "bodies written to") || string(req) != captureRequests[0].body ||
			!bytes.HasPrefix(resp, []byte("data: {")) || !regexp.MustCompile(`the model answers with a \w+ \nfinish: length`).Match(text) {
			t.Errorf("show --out-dir: %d\n%s\nrequest %q\ntranscript %s", code, out, req, text)
		}
	})

	t.Run("out-dir over files there", func(t *testing.T) {
		// Bodies written again into a directory that holds a world-readable
		// file and a symlink by those names: the decrypted bodies are new
		// 0600 files, and the symlink's target is left alone.
		dir := t.TempDir()
		victim := filepath.Join(t.TempDir(), "victim")
		os.WriteFile(victim, []byte("precious"), 0o644)
		os.WriteFile(filepath.Join(dir, "request.body"), nil, 0o644)
		os.Symlink(victim, filepath.Join(dir, "response.body"))
		out, errOut, code := show(t, "chat-stream", "--identity", l.idFile, "--out-dir", dir)
		if code != 0 {
			t.Fatalf("show --out-dir: %d\n%s%s", code, out, errOut)
		}
		if b, _ := os.ReadFile(victim); string(b) != "precious" {
			t.Errorf("show --out-dir wrote through the symlink response.body: the file it points at now holds %.40q", b)
		}
		for _, name := range []string{"request.body", "response.body", "transcript.txt"} {
			fi, err := os.Lstat(filepath.Join(dir, name))
			if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: %v %v, want a regular file, 0600", name, fi.Mode(), err)
			}
		}
	})

	t.Run("a capture that is not of the exchange, an event without one", func(t *testing.T) {
		// Another event's capture spliced into this one's line: its bodies
		// decrypt, and do not hash to this event's digests.
		var exported bytes.Buffer
		run([]string{"export", "--data-dir", filepath.Dir(l.spool)}, &exported, io.Discard)
		lines := map[string]string{}
		for line := range strings.Lines(exported.String()) {
			if m := regexp.MustCompile(`"request_id":"([^"]+)"`).FindStringSubmatch(line); m != nil {
				lines[m[1]] = strings.TrimSpace(line)
			}
		}
		payloadOf := regexp.MustCompile(`"payload":\{[^}]*\}`)
		spliced := payloadOf.ReplaceAllString(lines["chat-stream"], payloadOf.FindString(lines["completion"]))
		noPayload := strings.Replace(payloadOf.ReplaceAllString(lines["completion"], `"payload":null`), `"request_id":"completion"`, `"request_id":"no-capture"`, 1)
		// A hash that would set the window title and clear the screen, and
		// two events of one request whose ids and times would.
		hostileHash := regexp.MustCompile(`("input":\{"bytes":\d+,"hash":)"sha256:[0-9a-f]+"`).ReplaceAllString(
			strings.Replace(lines["completion"], `"request_id":"completion"`, `"request_id":"hostile-hash"`, 1), `${1}"sha256:\u001b]0;pwned\u0007\u001b[2J"`)
		dup := func(id string) string {
			return `{"v":1,"type":"inference","id":"` + id + `","time":"\u001b[2J","request_id":"twice","model":{"name":"m"}}`
		}
		file := filepath.Join(t.TempDir(), "events.ndjson")
		os.WriteFile(file, []byte(spliced+"\n"+noPayload+"\n"+hostileHash+"\n"+dup("a\u001b]0;x\u0007")+"\n"+dup("b\u202e")+"\n"), 0o600)
		for _, tc := range []struct{ id, want string }{
			{"chat-stream", "auditproxy: show: the decrypted request hashes to sha256:"},
			{"no-capture", "auditproxy: show: the event has no captured payload (the sidecar ran without --capture-payloads)\n"},
			{"hostile-hash", `, the event says sha256:\x1b]0;pwned\x07\x1b[2J: the capture is not of this exchange`},
		} {
			var out, errOut bytes.Buffer
			code := run([]string{"show", "--request-id", tc.id, "--identity", l.idFile, file}, &out, &errOut)
			if code != 1 || !strings.HasPrefix(errOut.String(), "auditproxy: show: ") || !strings.Contains(errOut.String(), tc.want) || strings.Count(errOut.String(), "\n") != 1 || !strings.Contains(out.String(), "weights checksum: ") {
				t.Errorf("show %s: %d, want 1 and %q\n%s%s", tc.id, code, tc.want, out.String(), errOut.String())
			}
			if strings.ContainsAny(out.String()+errOut.String(), "\x1b\a\u202e") {
				t.Errorf("show %s printed a raw control character: %q", tc.id, errOut.String())
			}
		}
		var out, errOut bytes.Buffer
		if code := run([]string{"show", "--request-id", "twice", file}, &out, &errOut); code != 2 ||
			!strings.Contains(errOut.String(), `a\x1b]0;x\x07 (\x1b[2J), b\u202e (\x1b[2J)`) || strings.ContainsAny(errOut.String(), "\x1b\a\u202e") {
			t.Errorf("show of a request id two events have: %d %q", code, errOut.String())
		}
	})

	t.Run("without an identity, with a stranger's", func(t *testing.T) {
		out, _, code := show(t, "chat-stream")
		if code != 0 || !strings.Contains(out, "bodies: captured, not shown: give --identity") || !strings.Contains(out, "weights checksum: "+l.checksum) {
			t.Errorf("show without --identity: %d\n%s", code, out)
		}
		out, errOut, code := show(t, "chat-stream", "--identity", l.strangerFile)
		if code != 1 || !strings.Contains(errOut, "decrypt payload") || !strings.Contains(out, "weights checksum: ") {
			t.Errorf("show with a stranger's identity: %d\n%s%s", code, out, errOut)
		}
	})
}

// TestShowSaysWhatWasInEffect: what show reads from the operational events
// around an inference, on logs written by hand: the newest record before
// the event, of its log, that matches what the event names; "unknown" or
// "none recorded" where none does; a GPU identity that does not hash to
// its digest is called altered.
func TestShowSaysWhatWasInEffect(t *testing.T) {
	h100 := &gpu.Identity{DriverVersion: "550.54.15", CUDADriverVersion: "12.4", Devices: []gpu.Device{
		{Index: 0, UUID: "GPU-1234", Name: "NVIDIA H100 80GB HBM3", Serial: "1650", PCIBusID: "00000000:17:00.0", MIGMode: "disabled"}}}
	digest := h100.Digest()
	idJSON, _ := json.Marshal(h100)
	at := func(min int) string { return fmt.Sprintf("2026-12-01T10:%02d:00.000000000Z", min) }
	// An event's id is its type and minute: ops-model_changed-3.
	ops := func(typ string, min int, origin, details string) string {
		return fmt.Sprintf(`{"v":1,"type":%q,"id":"ops-%s-%d","time":%q,"details":%s,"source":{"host":"h1","version":"v"},"log":{"origin":%q,"seq":%d,"prev":""}}`,
			typ, typ, min, at(min), details, origin, min)
	}
	inference := func(gpuDigest string) string {
		g := "null"
		if gpuDigest != "" {
			g = `"` + gpuDigest + `"`
		}
		return `{"v":1,"type":"inference","id":"ev-1","time":"` + at(30) + `","request_id":"r1","method":"POST","path":"/v1/chat/completions","stream":false,` +
			`"model":{"name":"m","checksum":"blake3:aa"},"gpu":` + g + `,"input":{"hash":"` + hashing.Sum(hashing.BLAKE3, nil) + `","bytes":0,"tokens":null},` +
			`"output":{"hash":"` + hashing.Sum(hashing.BLAKE3, nil) + `","bytes":0,"tokens":3,"finish_reason":"stop"},"api_key_id":"k1:ab",` +
			`"latency_ms":{"total":12.5,"upstream":10,"overhead":2.5},"status":{"code":200,"outcome":"ok"},"source":{"host":"h1","version":"v"},"log":{"origin":"h1/A","seq":50,"prev":""}}`
	}
	record := func(id, resource, outcome, follows string) string {
		extra := ""
		if outcome != "" {
			extra = `,"follows":"` + follows + `","outcome":"` + outcome + `"`
		}
		return `{"record":{"actor":"sarah","approver":"marcus","created":"2026-12-01T09:00:00Z","id":"` + id + `","justification":"j"` + extra +
			`,"resource":"` + resource + `","ticket":"OPS-1","type":"model_rollout"},"signatures":[],"approval_required":true}`
	}
	for _, tc := range []struct {
		name   string
		events []string
		want   []string
	}{
		{"nothing recorded", []string{inference("")}, []string{
			"weights checksum: blake3:aa\n",
			"rollout in effect: none recorded in the logs read",
			"change record in effect: none recorded in the logs read",
			"gpu: unknown (NVML not available to the sidecar: the event's gpu is null)",
			"vLLM version: unknown (no upstream_version event of this sidecar before the request in the logs read)",
			"tokens: in unknown, out 3, finish_reason stop\n",
			"latency: total 12.50 ms, ttft n/a (not streamed), upstream 10.00 ms, overhead 2.50 ms\n",
			"api_key_id k1:ab\n",
			"bodies: none captured (the sidecar ran without --capture-payloads)",
		}},
		{"the newest of each before the event", []string{
			ops("model_changed", 1, "h1/A", `{"model":"m","dir":"/models/m","after":"blake3:aa","files":2}`),
			ops("model_changed", 2, "h1/A", `{"model":"m","dir":"/models/m","after":"blake3:bb","before":"blake3:aa","files":2}`),
			ops("model_changed", 3, "h1/A", `{"model":"m","dir":"/models/m","after":"blake3:aa","before":"blake3:bb","files":2}`),
			ops("model_changed", 4, "h1/A", `{"model":"other","dir":"/models/o","after":"blake3:cc","files":2}`),
			ops("upstream_version", 1, "h1/A", `{"after":"0.10.0"}`),
			ops("upstream_version", 5, "h1/A", `{"after":"0.11.0","before":"0.10.0"}`),
			ops("gpu_identity", 1, "h1/A", `{"digest":"`+digest+`","identity":`+string(idJSON)+`}`),
			ops("annotation", 6, "h1/A", record("rec-1", "m", "", "")),
			ops("annotation", 7, "h1/A", record("rec-2", "m", "rolled_back", "ops-annotation-6")),
			ops("annotation", 8, "h1/A", record("rec-3", "other", "", "")),
			inference(digest),
			ops("model_changed", 40, "h1/A", `{"model":"m","dir":"/models/m","after":"blake3:dd","before":"blake3:aa","files":2}`),
			ops("upstream_version", 40, "h1/A", `{"after":"0.12.0","before":"0.11.0"}`),
		}, []string{
			"rollout in effect: model_changed at 2026-12-01T10:03:00Z (event ops-model_changed-3, log h1/A): weights blake3:aa, before them blake3:bb, dir /models/m\n",
			"change record in effect: model_rollout of m by sarah, approved by marcus, ticket OPS-1\n    record rec-1, annotation event ops-annotation-6 at 2026-12-01T10:06:00Z\n    as recorded: its signatures are not checked without --allowed-signers\n    outcome recorded before the request: rolled_back\n",
			"gpu: " + digest + "\n  driver 550.54.15, CUDA 12.4, 1 GPU(s) (gpu_identity at 2026-12-01T10:01:00Z, event ops-gpu_identity-1)\n    0: NVIDIA H100 80GB HBM3 GPU-1234, serial 1650, 00000000:17:00.0, MIG disabled\n",
			"vLLM version: 0.11.0 (upstream_version at 2026-12-01T10:05:00Z, event ops-upstream_version-5, log h1/A)\n",
		}},
		{"records of other logs and weights", []string{
			ops("model_changed", 1, "h1/A", `{"model":"m","dir":"/models/m","after":"blake3:bb","files":2}`),
			ops("upstream_version", 1, "h1/OLD", `{"after":"0.9.0"}`),
			ops("gpu_changed", 45, "h2/B", `{"before":{"digest":"sha256:00","identity":null},"after":{"digest":"`+digest+`","identity":`+string(idJSON)+`}}`),
			inference(digest),
		}, []string{
			"rollout in effect: model_changed at 2026-12-01T10:01:00Z (event ops-model_changed-1, log h1/A): weights blake3:bb, dir /models/m\n    NOTE: no event before the request recorded the weights it names",
			"vLLM version: 0.9.0 (upstream_version at 2026-12-01T10:01:00Z, event ops-upstream_version-1, log h1/OLD, an earlier log of this host",
			"(gpu_changed at 2026-12-01T10:45:00Z, event ops-gpu_changed-45)",
			"NOTE: recorded in another log, or after the event, than the event's",
		}},
		{"another sidecar's rollout and change record", []string{
			strings.Replace(ops("model_changed", 1, "h2/B", `{"model":"m","dir":"/models/m","after":"blake3:aa","files":2}`), `"host":"h1"`, `"host":"h2"`, 1),
			strings.Replace(ops("annotation", 6, "h2/B", record("rec-9", "m", "", "")), `"host":"h1"`, `"host":"h2"`, 1),
			inference(""),
		}, []string{"rollout in effect: none recorded in the logs read", "change record in effect: none recorded in the logs read"}},
		{"an altered GPU identity", []string{
			ops("gpu_identity", 1, "h1/A", `{"digest":"`+digest+`","identity":`+strings.Replace(string(idJSON), "GPU-1234", "GPU-9999", 1)+`}`),
			inference(digest),
		}, []string{"0: NVIDIA H100 80GB HBM3 GPU-9999", "NOTE: the identity recorded with this digest does not hash to it (sha256:"}},
		{"a digest no event records", []string{inference("sha256:0123")}, []string{"gpu: sha256:0123\n  NOTE: no gpu_identity or gpu_changed event with this digest in the logs read"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "events.ndjson")
			os.WriteFile(file, []byte(strings.Join(tc.events, "\n")+"\n"), 0o600)
			var out, errOut bytes.Buffer
			if code := run([]string{"show", "--request-id", "r1", file}, &out, &errOut); code != 0 {
				t.Fatalf("show: %d %s%s", code, out.String(), errOut.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("show does not say %q:\n%s", w, out.String())
				}
			}
		})
	}
}

// TestTruncatedCaptureIsSaid: a body longer than --capture-max-bytes is
// captured in part; show, bundle and verify-proof say it cannot be checked
// against the event's hash, and show reads what was captured.
func TestTruncatedCaptureIsSaid(t *testing.T) {
	l := newCaptureLog(t, "--capture-max-bytes", "300")
	var out, errOut bytes.Buffer
	if code := run([]string{"show", "--request-id", "chat-stream", "--identity", l.idFile, l.spool}, &out, &errOut); code != 0 ||
		!regexp.MustCompile(`\n  request: \d+ bytes, sha256:[0-9a-f]+ matches the event\n  response: 300 of \d+ bytes captured \(truncated\); the hash covers all of them and cannot be checked\n`).MatchString(out.String()) ||
		!strings.Contains(out.String(), "note: the body ends inside an event (no empty line after it): that event is not read; the capture may be cut\n") {
		t.Errorf("show of a truncated capture: %d\n%s%s", code, out.String(), errOut.String())
	}
	dir := filepath.Join(t.TempDir(), "bundle")
	if code := run([]string{"bundle", "--request-id", "chat-stream", "--pubkey", l.pub, "--identity", l.idFile, "--out", dir, l.spool}, io.Discard, &errOut); code != 0 {
		t.Fatalf("bundle: %d %s", code, errOut.String())
	}
	readme, _ := os.ReadFile(filepath.Join(dir, "README.txt"))
	out.Reset()
	if code := run([]string{"verify-proof", "--pubkey", l.pub, dir}, &out, &errOut); code != 0 ||
		!regexp.MustCompile(`\n  response.body: 300 of \d+ bytes captured \(truncated\); the hash covers all of them and cannot be checked\n`).MatchString(out.String()) ||
		!regexp.MustCompile(`NOTE: response.body: 300 of \d+ bytes captured \(truncated\)`).Match(readme) {
		t.Errorf("verify-proof of a truncated bundle: %d\n%s%s\n%s", code, out.String(), errOut.String(), readme)
	}
	// The request was captured whole (only the response was cut): it is
	// checked against its hash, however short a substitute; the response
	// must be the bytes the event says were captured.
	for _, tc := range []struct{ file, body, want string }{
		{"request.body", `{"model":"x","messages":[{"role":"user","content":"forged"}]}`, "verify-proof: request.body hashes to sha256:"},
		{"response.body", `data: {"choices":[{"index":0,"delta":{"content":"forged"}}]}` + "\n\n", "verify-proof: response.body is 62 bytes, and the event says 300 of its "},
	} {
		copyDir := filepath.Join(t.TempDir(), "copy")
		testutil.CopyDir(t, dir, copyDir)
		os.WriteFile(filepath.Join(copyDir, tc.file), []byte(tc.body), 0o600)
		out.Reset()
		errOut.Reset()
		if code := run([]string{"verify-proof", "--pubkey", l.pub, copyDir}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("verify-proof of a truncated bundle with another %s: %d, want 1 and %q\n%s%s", tc.file, code, tc.want, out.String(), errOut.String())
		}
	}
}
