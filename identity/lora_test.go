package identity

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/internal/fakevllm"
)

// writeAdapter makes a PEFT LoRA adapter directory vLLM (the fake) loads.
func writeAdapter(t *testing.T, dir, base, weights string) string {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	for name, body := range map[string]string{
		"adapter_config.json":       `{"peft_type":"LORA","base_model_name_or_path":"` + base + `","r":8}`,
		"adapter_model.safetensors": weights,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// countingTransport counts the poller's reads of /v1/models.
type countingTransport struct{ polls atomic.Int64 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path == "/v1/models" {
		c.polls.Add(1)
	}
	return http.DefaultTransport.RoundTrip(r)
}

func (r *recorder) ofType(typ string) []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
	for _, e := range r.events {
		if e["type"] == typ {
			out = append(out, e)
		}
	}
	return out
}

// TestRuntimeLoRAIsRecordedAtOnce: an adapter loaded at run time is
// recorded (model_loaded, with its manifest's checksum) and identified by
// the Refresh the proxy makes before the load's answer ends, not at the
// next poll; its unload likewise. An adapter a resolver loads for a
// request is polled for by Await; a served name no poll lists costs one
// poll an Interval.
func TestRuntimeLoRAIsRecordedAtOnce(t *testing.T) {
	const base = "meta-llama/Llama-3.1-8B-Instruct"
	root := t.TempDir()
	resolver := filepath.Join(root, "resolver")
	fake := fakevllm.New(fakevllm.Config{Model: base, Root: base, AllowRuntimeLoRA: true, LoRAResolverDir: resolver})
	upstream, err := fake.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	rec := &recorder{}
	transport := &countingTransport{}
	m := StartModels(ModelsOptions{Upstream: upstream, Interval: time.Hour, Record: rec.Record,
		Client: &http.Client{Transport: transport, Timeout: 10 * time.Second}})
	defer m.Close()
	waitUntil(t, func() bool { return m.listed.Load() != nil })
	ctx := context.Background()

	sql := writeAdapter(t, filepath.Join(root, "sql"), base, "sql weights")
	if err := fake.LoadAdapter("sql-lora", sql); err != nil {
		t.Fatal(err)
	}
	if err := m.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	want := manifestChecksum(t, sql)
	loaded := rec.ofType(audit.TypeModelLoaded)
	if len(loaded) != 1 {
		t.Fatalf("model_loaded events: %v", loaded)
	}
	d := loaded[0]["details"].(map[string]any)
	if d["model"] != "sql-lora" || d["root"] != sql || d["parent"] != base || d["checksum"] != want {
		t.Errorf("model_loaded details %v, want the adapter's checksum %s", d, want)
	}
	if ids := m.Lookup("sql-lora"); ids.Checksum != want {
		t.Errorf("after the refresh, sql-lora is %+v", ids)
	}

	resp, err := http.Post(upstream+"/v1/unload_lora_adapter", "application/json", strings.NewReader(`{"lora_name":"sql-lora"}`))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("unload: %v %v", resp, err)
	}
	resp.Body.Close()
	m.Refresh(ctx)
	unloaded := rec.ofType(audit.TypeModelUnloaded)
	if len(unloaded) != 1 || unloaded[0]["details"].(map[string]any)["checksum"] != want {
		t.Fatalf("model_unloaded events: %v", unloaded)
	}
	if ids := m.Lookup("sql-lora"); ids.Checksum != "" {
		t.Errorf("an unloaded adapter still has checksums: %+v", ids)
	}

	// A resolver loads "auto" for the request that names it; Await, as the
	// proxy calls it at that request's end, finds it.
	auto := writeAdapter(t, filepath.Join(resolver, "auto"), base, "auto weights")
	resp, err = http.Post(upstream+"/v1/completions", "application/json", strings.NewReader(`{"model":"auto","prompt":"x","max_tokens":1}`))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("request to a resolver's adapter: %v %v", resp, err)
	}
	resp.Body.Close()
	if ids := m.Await(ctx, "auto"); ids.Checksum != manifestChecksum(t, auto) {
		t.Errorf("Await(auto) = %+v", ids)
	}
	if n := len(rec.ofType(audit.TypeModelLoaded)); n != 2 {
		t.Errorf("%d model_loaded events, want 2", n)
	}

	// Listed names are answered without a poll; an unlisted one polls once
	// an Interval.
	clock := time.Now()
	m.mu.Lock()
	m.now = func() time.Time { return clock }
	m.mu.Unlock()
	advance := func(d time.Duration) {
		m.mu.Lock()
		clock = clock.Add(d)
		m.mu.Unlock()
	}
	advance(time.Minute)
	before := transport.polls.Load()
	m.Await(ctx, "auto")
	m.Await(ctx, "served-but-never-listed")
	m.Await(ctx, "served-but-never-listed")
	if n := transport.polls.Load() - before; n != 1 {
		t.Errorf("%d polls for three Awaits (one listed name, one unlisted twice), want 1", n)
	}
	// A client naming a new model in every request: one poll a second.
	advance(time.Minute)
	before = transport.polls.Load()
	for i := range 50 {
		m.Await(ctx, fmt.Sprintf("random-%d", i))
	}
	advance(awaitPollGap)
	m.Await(ctx, "random-after-a-second")
	if n := transport.polls.Load() - before; n != 2 {
		t.Errorf("%d polls for 51 new names within a second and one after, want 2", n)
	}
}

// TestChecksumIsServedBeforeItsModelChanged: when model_changed is
// recorded, Lookup already gives its checksum, so no event after it in the
// log says "pending" (a request right after it did, now and then).
func TestChecksumIsServedBeforeItsModelChanged(t *testing.T) {
	dir := t.TempDir()
	writeModel(t, dir, "weights")
	fake := fakevllm.New(fakevllm.Config{Root: dir})
	upstream, err := fake.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	var m *Models
	var atRecord atomic.Value
	m = newModels(ModelsOptions{Upstream: upstream, Record: func(ev []byte) error {
		if strings.Contains(string(ev), `"type":"model_changed"`) {
			atRecord.Store(m.Lookup("meta-llama/Llama-3.1-8B-Instruct").Checksum)
		}
		return nil
	}})
	if err := m.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := atRecord.Load(), manifestChecksum(t, dir); got != want {
		t.Errorf("Lookup while model_changed was recorded: %v, want %s", got, want)
	}
}

// TestAwaitDoesNotWaitBehindAPoll: while a poll runs (hashing a large
// model takes minutes), Await answers at once instead of holding the end of
// the request that called it.
func TestAwaitDoesNotWaitBehindAPoll(t *testing.T) {
	m := newModels(ModelsOptions{Upstream: "http://127.0.0.1:1"})
	m.polling <- struct{}{} // a poll in progress
	defer func() { <-m.polling }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if ids := m.Await(ctx, "an-adapter"); ids != (ModelIDs{}) {
		t.Errorf("Await = %+v", ids)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Await waited %v behind a poll in progress", d)
	}
}
