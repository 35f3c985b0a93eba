package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/auditproxy/auditproxy/internal/testutil"
)

// TestBundleForAThirdParty: bundle writes one request's evidence, which
// verify-proof checks with only the bundle and its key; a body, the event
// or the proof changed afterwards fails with what was changed; without an
// identity the bundle has no bodies and says so; a directory in use and a
// private key given as --pubkey are refused, the key unprinted.
func TestBundleForAThirdParty(t *testing.T) {
	l := newCaptureLog(t)
	bundle := func(t *testing.T, args ...string) (string, string, int) {
		t.Helper()
		var out, errOut bytes.Buffer
		code := run(append(append([]string{"bundle"}, args...), l.spool), &out, &errOut)
		return out.String(), errOut.String(), code
	}
	verify := func(t *testing.T, dir string) (string, string, int) {
		t.Helper()
		var out, errOut bytes.Buffer
		code := run([]string{"verify-proof", "--pubkey", filepath.Join(dir, "log.pub"), dir}, &out, &errOut)
		return out.String(), errOut.String(), code
	}
	root := t.TempDir()
	full := filepath.Join(root, "chat-stream")
	out, errOut, code := bundle(t, "--request-id", "chat-stream", "--pubkey", l.pub, "--identity", l.idFile, "--out", full)
	if code != 0 || !strings.Contains(out, "wrote "+full+": event.json, event.tlog-proof, log.pub, request.body, response.body, transcript.txt, README.txt\n") ||
		!strings.Contains(out, "check it: auditproxy verify-proof --pubkey "+filepath.Join(full, "log.pub")+" "+full) {
		t.Fatalf("bundle: %d\n%s%s", code, out, errOut)
	}
	pub, _ := os.ReadFile(l.pub)
	bundled, _ := os.ReadFile(filepath.Join(full, "log.pub"))
	req, _ := os.ReadFile(filepath.Join(full, "request.body"))
	resp, _ := os.ReadFile(filepath.Join(full, "response.body"))
	readme, _ := os.ReadFile(filepath.Join(full, "README.txt"))
	text, _ := os.ReadFile(filepath.Join(full, "transcript.txt"))
	if strings.TrimSpace(string(bundled)) != strings.TrimSpace(string(pub)) || string(req) != captureRequests[0].body ||
		!bytes.HasPrefix(resp, []byte("data: ")) || !bytes.Contains(text, []byte("--- answer (chat completions API, streamed")) {
		t.Errorf("bundle files: log.pub %q, request %q, transcript %s", bundled, req, text)
	}
	// README.txt says how to check each file, the bodies by hand too.
	for _, want := range []string{
		"auditproxy verify-proof --pubkey log.pub .",
		"Compare log.pub with the verifier key the operator publishes",
		"sha256sum request.body   must print " + sha256Hex(req),
		"sha256sum response.body  must print " + sha256Hex(resp),
		"Request id:  chat-stream",
	} {
		if !strings.Contains(string(readme), want) {
			t.Errorf("README.txt does not say %q:\n%s", want, readme)
		}
	}
	out, errOut, code = verify(t, full)
	if code != 0 || !strings.Contains(out, "verified: event ") || !strings.Contains(out, "  event.json: the event the proof proves\n") ||
		!strings.Contains(out, "  request.body: "+itoa(len(req))+" bytes, sha256:"+sha256Hex(req)+" matches the event's input.hash\n") ||
		!strings.Contains(out, "  response.body: "+itoa(len(resp))+" bytes, sha256:"+sha256Hex(resp)+" matches the event's output.hash\n") {
		t.Errorf("verify-proof of the bundle: %d\n%s%s", code, out, errOut)
	}
	// The manual check of README.txt's step 4, with standard tools.
	if _, err := exec.LookPath("bash"); err == nil {
		cmd := exec.Command("bash", "-c", "sed -n 2p event.tlog-proof | cut -d' ' -f2 | base64 -d | cmp - <(tr -d '\\n' < event.json)")
		cmd.Dir = full
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("README.txt's step 4: %v %s", err, b)
		}
	}

	// Another request's bundle, for its proof.
	other := filepath.Join(root, "responses-stream")
	if _, errOut, code := bundle(t, "--request-id", "responses-stream", "--pubkey", l.pub, "--identity", l.idFile, "--out", other); code != 0 {
		t.Fatalf("bundle of another request: %d %s", code, errOut)
	}
	otherProof, _ := os.ReadFile(filepath.Join(other, "event.tlog-proof"))
	for _, tc := range []struct {
		name   string
		change func(dir string)
		want   string
	}{
		{"a body altered", func(dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, "response.body"))
			os.WriteFile(filepath.Join(dir, "response.body"), bytes.Replace(b, []byte("[DONE]"), []byte("[DOME]"), 1), 0o600)
		}, "verify-proof: response.body hashes to sha256:"},
		{"the event altered", func(dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, "event.json"))
			os.WriteFile(filepath.Join(dir, "event.json"), bytes.Replace(b, []byte(`"stream":true`), []byte(`"stream":false`), 1), 0o600)
		}, "verify-proof: event.json is not the event event.tlog-proof proves: it was altered, or the proof is another event's"},
		{"the event in the proof altered", func(dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, "event.tlog-proof"))
			lines := strings.SplitN(string(b), "\n", 3)
			lines[1] = "extra " + b64(bytes.Replace(unb64(t, strings.TrimPrefix(lines[1], "extra ")), []byte(`"stream":true`), []byte(`"stream":false`), 1))
			os.WriteFile(filepath.Join(dir, "event.tlog-proof"), []byte(strings.Join(lines, "\n")), 0o600)
		}, "verify-proof: "},
		{"the transcript altered", func(dir string) {
			os.WriteFile(filepath.Join(dir, "transcript.txt"), []byte("--- answer ---\nI will wire you $1M\n--- end ---\n"), 0o600)
		}, "verify-proof: transcript.txt is not the readable text of request.body and response.body"},
		{"a file added", func(dir string) {
			os.WriteFile(filepath.Join(dir, "answer.txt"), []byte("I will wire you $1M\n"), 0o600)
		}, "verify-proof: answer.txt is no file of a bundle"},
		{"a body removed", func(dir string) {
			os.Remove(filepath.Join(dir, "response.body"))
		}, "verify-proof: the bundle holds request.body and not response.body"},
		{"another request's proof", func(dir string) {
			os.WriteFile(filepath.Join(dir, "event.tlog-proof"), otherProof, 0o600)
		}, "verify-proof: event.json is not the event event.tlog-proof proves"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "copy")
			testutil.CopyDir(t, full, dir)
			tc.change(dir)
			out, errOut, code := verify(t, dir)
			if code != 1 || !strings.Contains(errOut, tc.want) || strings.Count(errOut, "\n") != 1 {
				t.Errorf("verify-proof: %d, want 1 and %q\n%s%s", code, tc.want, out, errOut)
			}
		})
	}

	t.Run("a forged log's bundle, its key beside the genuine one", func(t *testing.T) {
		// Anyone can run a sidecar with a key of their own, and make a log
		// that says what they like: its bundle verifies with its own key.
		// Put beside the genuine key in log.pub, a reader who compares
		// log.pub with the published key finds it there; verify-proof must
		// name the key that signed, and that is not the genuine one.
		forged := newCaptureLog(t)
		dir := filepath.Join(t.TempDir(), "forged")
		var out, errOut bytes.Buffer
		if code := run([]string{"bundle", "--request-id", "chat-stream", "--pubkey", forged.pub, "--identity", forged.idFile, "--out", dir, forged.spool}, &out, &errOut); code != 0 {
			t.Fatalf("bundle of the forged log: %d %s", code, errOut.String())
		}
		forgedKey, _ := os.ReadFile(forged.pub)
		os.WriteFile(filepath.Join(dir, "log.pub"), []byte(strings.TrimSpace(string(pub))+"\n"+strings.TrimSpace(string(forgedKey))+"\n"), 0o644)
		out2, errOut2, code := verify(t, dir)
		if code != 0 || !strings.Contains(out2, "  checkpoint signed by "+strings.TrimSpace(string(forgedKey))+"\n") ||
			strings.Contains(out2, strings.TrimSpace(string(pub))) || !strings.Contains(out2, "--pubkey holds 2 keys: only the one named above signed") {
			t.Errorf("verify-proof does not name the key that signed:\n%d %s%s", code, out2, errOut2)
		}
		out2, _, _ = verify(t, full)
		if !strings.Contains(out2, "  checkpoint signed by "+strings.TrimSpace(string(pub))+"\n") || strings.Contains(out2, "only the one named above") {
			t.Errorf("verify-proof of the genuine bundle does not name its key:\n%s", out2)
		}
	})

	t.Run("log.pub holds the key that signed, no other given", func(t *testing.T) {
		other := newCaptureLog(t) // another log's key, given too
		dir := filepath.Join(t.TempDir(), "two-keys")
		if _, errOut, code := bundle(t, "--request-id", "chat-stream", "--pubkey", other.pub, "--pubkey", l.pub, "--out", dir); code != 0 {
			t.Fatalf("bundle: %d %s", code, errOut)
		}
		if got, _ := os.ReadFile(filepath.Join(dir, "log.pub")); strings.TrimSpace(string(got)) != strings.TrimSpace(string(pub)) {
			t.Errorf("log.pub:\n%s\nwant only the signing key:\n%s", got, pub)
		}
	})

	t.Run("without an identity", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "no-bodies")
		out, errOut, code := bundle(t, "--request-id", "chat-stream", "--pubkey", l.pub, "--out", dir)
		if code != 0 || !strings.Contains(out, "wrote "+dir+": event.json, event.tlog-proof, log.pub, README.txt\n") ||
			!strings.Contains(out, "no bodies: made without --identity") {
			t.Fatalf("bundle: %d\n%s%s", code, out, errOut)
		}
		readme, _ := os.ReadFile(filepath.Join(dir, "README.txt"))
		if _, err := os.Stat(filepath.Join(dir, "request.body")); err == nil || !strings.Contains(string(readme), "This bundle holds no bodies: it was made without the age identity") {
			t.Errorf("a bundle without --identity:\n%s", readme)
		}
		out, errOut, code = verify(t, dir)
		if code != 0 || !strings.Contains(out, "no bodies in the bundle: only the event and its place in the log were checked") {
			t.Errorf("verify-proof: %d\n%s%s", code, out, errOut)
		}
	})

	t.Run("refused", func(t *testing.T) {
		signingKey := filepath.Join(filepath.Dir(l.spool), "signing.key")
		secret, err := os.ReadFile(signingKey)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			args []string
			want string
		}{
			{"a directory in use", []string{"--request-id", "chat-stream", "--pubkey", l.pub, "--out", full}, "bundle: --out " + full + " is not empty (7 entries)"},
			{"a private key as --pubkey", []string{"--request-id", "chat-stream", "--pubkey", signingKey, "--out", filepath.Join(t.TempDir(), "x")},
				"bundle: --pubkey: line 1 of " + signingKey + " is a private signing key (auditproxy keygen's FILE, not FILE.pub), which must not be shared"},
			{"no --out", []string{"--request-id", "chat-stream", "--pubkey", l.pub}, "bundle: give --request-id or --event-id, --pubkey, --out"},
		} {
			out, errOut, code := bundle(t, tc.args...)
			if code != 2 || !strings.Contains(errOut, tc.want) {
				t.Errorf("%s: exit %d, want 2 and %q\n%s%s", tc.name, code, tc.want, out, errOut)
			}
			if strings.Contains(out+errOut, strings.TrimSpace(string(secret))[20:]) {
				t.Errorf("%s: the signing key is printed", tc.name)
			}
		}
	})
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func itoa(n int) string { return strconv.Itoa(n) }

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func unb64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
