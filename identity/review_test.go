package identity

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// TestAwaitCutShortKeepsKnownChecksums: Await polls under the deadline of
// the request that called it (awaitModelWait, 5 s). When that deadline
// passes during the poll (hashing a new adapter that takes longer, say),
// every name the poll had not reached yet loses the checksum it had: the
// poll publishes only what it hashed itself. Until the next poll (an
// Interval later) each request for those names records no checksum, and a
// model_unloaded for one of them has none. A client that names a model no
// poll lists (any name, with VLLM_SKIP_MODEL_NAME_VALIDATION) starts such a
// poll once a second.
func TestAwaitCutShortKeepsKnownChecksums(t *testing.T) {
	root := t.TempDir()
	base, old, fresh := filepath.Join(root, "base"), filepath.Join(root, "old"), filepath.Join(root, "new")
	writeModel(t, base, "base weights")
	writeAdapter(t, old, "base", "old adapter")
	writeAdapter(t, fresh, "base", "new adapter")
	parent := "base"
	var withNew atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/version":
			w.Write([]byte(`{"version":"0.11.0"}`))
		case "/v1/models":
			cards := []modelCard{{ID: "base", Root: base}}
			if withNew.Load() {
				cards = append(cards, modelCard{ID: "new", Root: fresh, Parent: &parent}) // vLLM lists adapters in load order
			}
			cards = append(cards, modelCard{ID: "old", Root: old, Parent: &parent})
			json.NewEncoder(w).Encode(map[string]any{"object": "list", "data": cards})
		}
	}))
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := newModels(ModelsOptions{Upstream: srv.URL, Record: func(ev []byte) error {
		// The request's deadline passes right after the new adapter is hashed.
		if strings.Contains(string(ev), `"model_changed"`) && strings.Contains(string(ev), `"model":"new"`) {
			cancel()
		}
		return nil
	}})
	if err := m.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := m.Lookup("old")
	if want.Checksum == "" || want.BaseChecksum == "" {
		t.Fatalf("old adapter after the first poll: %+v", want)
	}

	withNew.Store(true)
	m.Await(ctx, "new")
	if got := m.Lookup("old"); got != want {
		t.Errorf("after an Await cut short, the old adapter is %+v, want %+v as before", got, want)
	}
	if got := m.Lookup("base"); got.Checksum == "" {
		t.Errorf("after an Await cut short, the base model is %+v", got)
	}
}
