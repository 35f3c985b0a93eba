package testutil

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// OmniwitnessModule is the independent C2SP tlog-witness the witness
// client is tested against: transparency-dev's omniwitness, built from its own
// module (its go.mod, not ours) and run as a separate process.
const OmniwitnessModule = "github.com/transparency-dev/witness/cmd/omniwitness@v0.0.0-20260720115447-2e1c6971d19e"

// Omniwitness builds and starts an omniwitness on loopback that witnesses
// the log origin signed by logVKey, and returns its URL, the verifier of
// its cosignatures and its verifier key as text.
func Omniwitness(t testing.TB, origin, logVKey string) (url string, cosigner note.Verifier, witnessVKey string) {
	t.Helper()
	dir := t.TempDir()
	install := exec.Command("go", "install", OmniwitnessModule)
	install.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=-mod=mod")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("go install %s: %v\n%s", OmniwitnessModule, err, out)
	}
	skey, vkey, err := note.GenerateKey(rand.Reader, "omniwitness.test")
	if err != nil {
		t.Fatal(err)
	}
	keyFile, logsFile := filepath.Join(dir, "witness.key"), filepath.Join(dir, "logs.yaml")
	os.WriteFile(keyFile, []byte(skey), 0o600)
	os.WriteFile(logsFile, fmt.Appendf(nil, "Logs:\n  - Origin: %q\n    PublicKey: %q\n    URL: https://example.invalid/\n", origin, logVKey), 0o600)
	if cosigner, err = fnote.NewVerifierForCosignatureV1(vkey); err != nil {
		t.Fatal(err)
	}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	var logs bytes.Buffer
	cmd := exec.Command(filepath.Join(dir, "omniwitness"), "--listen", addr, "--metrics_listen", "",
		"--private_key_path", keyFile, "--additional_logs", logsFile, "--logtostderr")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("omniwitness output:\n%s", logs.String())
		}
	})
	url = "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Post(url+"/add-checkpoint", "text/plain", strings.NewReader("old 0\n\n"))
		if err == nil {
			resp.Body.Close()
			return url, cosigner, vkey
		}
		if time.Now().After(deadline) {
			t.Fatalf("omniwitness does not answer on %s: %v\n%s", addr, err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
