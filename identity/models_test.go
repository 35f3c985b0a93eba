package identity

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/hashing"
)

func writeModel(t *testing.T, dir, weights string) {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	for name, body := range map[string]string{"config.json": `{"model_type":"llama"}`, "model.safetensors": weights} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func manifestChecksum(t *testing.T, dir string) string {
	t.Helper()
	m, err := hashing.BuildManifest(context.Background(), dir, hashing.ManifestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return m.Checksum
}

// TestModelsFollowTheServedWeights: checksums of a base model and a LoRA
// adapter found through /v1/models, recorded as model_changed events, and a
// change of the weights recorded with before and after.
func TestModelsFollowTheServedWeights(t *testing.T) {
	root := t.TempDir()
	base, adapter := filepath.Join(root, "base"), filepath.Join(root, "adapter")
	writeModel(t, base, "weights v1")
	writeModel(t, adapter, "lora weights")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/version" {
			fmt.Fprint(w, `{"version":"0.11.0"}`)
			return
		}
		if r.URL.Path != "/v1/models" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, `{"object":"list","data":[{"id":"llama","root":%q,"parent":null},{"id":"sql-lora","root":%q,"parent":"llama"},{"id":"hub-only","root":"meta-llama/Other","parent":null}]}`, base, adapter)
	}))
	defer srv.Close()
	var mu sync.Mutex
	var events []string
	m := StartModels(ModelsOptions{Upstream: srv.URL, Interval: 20 * time.Millisecond, CacheFile: filepath.Join(root, "cache.json"),
		Record: func(ev []byte) error { mu.Lock(); events = append(events, string(ev)); mu.Unlock(); return nil }})
	defer m.Close()

	wantBase, wantAdapter := manifestChecksum(t, base), manifestChecksum(t, adapter)
	waitUntil(t, func() bool { return m.Lookup("sql-lora").Checksum == wantAdapter })
	if got := m.Lookup("llama"); got.Checksum != wantBase || got.BaseChecksum != "" {
		t.Errorf("llama: %+v, want %s", got, wantBase)
	}
	if got := m.Lookup("sql-lora"); got.BaseChecksum != wantBase {
		t.Errorf("adapter: %+v, want base %s", got, wantBase)
	}
	if got := m.Lookup("hub-only"); got != (ModelIDs{}) {
		t.Errorf("a model without local weights: %+v", got)
	}

	// The weights change on disk: a new checksum and an event saying so.
	time.Sleep(10 * time.Millisecond)
	writeModel(t, base, "weights v2")
	wantBase2 := manifestChecksum(t, base)
	waitUntil(t, func() bool { return m.Lookup("llama").Checksum == wantBase2 })
	m.Close()
	mu.Lock()
	defer mu.Unlock()
	all := strings.Join(events, "\n")
	if n := strings.Count(all, `"type":"model_changed"`); n != 3 {
		t.Errorf("%d model_changed events, want 3 (base, adapter, base again):\n%s", n, all)
	}
	if n := strings.Count(all, `"type":"upstream_version"`); n != 1 || !strings.Contains(all, `"details":{"after":"0.11.0"}`) {
		t.Errorf("%d upstream_version events:\n%s", n, all)
	}
	if !strings.Contains(all, `"before":"`+wantBase+`"`) || !strings.Contains(all, `"after":"`+wantBase2+`"`) {
		t.Errorf("the change is not recorded with before and after:\n%s", all)
	}
}

func TestModelDirGivenForAName(t *testing.T) {
	dir := t.TempDir()
	writeModel(t, dir, "w")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"data":[{"id":"served","root":"/not/here","parent":null}]}`)
	}))
	defer srv.Close()
	m := StartModels(ModelsOptions{Upstream: srv.URL, Interval: 20 * time.Millisecond, Dirs: map[string]string{"": dir}})
	defer m.Close()
	want := manifestChecksum(t, dir)
	waitUntil(t, func() bool { return m.Lookup("served").Checksum == want })
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
