package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/internal/fakevllm"
)

// TestRuntimeLoRAThroughServe: behind a vLLM that loads LoRA adapters at
// run time, a load sent through the sidecar is recorded (model_loaded,
// with the adapter's manifest checksum) before the client has the answer,
// so the first request to the adapter carries the adapter's checksum and
// its base's, though the next poll is an hour away; the unload is recorded
// the same way.
func TestRuntimeLoRAThroughServe(t *testing.T) {
	baseDir, baseSum := weightsWithChecksum(t)
	_, upstream := startFake(t, fakevllm.Config{Root: baseDir, AllowRuntimeLoRA: true})
	adapter := t.TempDir()
	os.WriteFile(filepath.Join(adapter, "adapter_config.json"), []byte(`{"peft_type":"LORA","base_model_name_or_path":"`+baseDir+`","r":8}`), 0o644)
	os.WriteFile(filepath.Join(adapter, "adapter_model.safetensors"), bytes.Repeat([]byte("a"), 32<<10), 0o644)
	var out bytes.Buffer
	if code := run([]string{"checksum", adapter}, &out, io.Discard); code != 0 {
		t.Fatal("checksum failed")
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	adapterSum := strings.TrimPrefix(lines[len(lines)-1], "model checksum: ")

	dataDir := t.TempDir()
	p := startServe(t, upstream, nil, "--data-dir", dataDir, "--model-poll-interval", "1h")
	waitUntil(t, "the base model's model_changed", 10*time.Second, func() bool {
		_, text := exported(t, dataDir)
		return strings.Contains(text, baseSum)
	})
	post := func(path, body string) int {
		resp, err := http.Post("http://"+p.listen+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("/v1/load_lora_adapter", `{"lora_name":"sql-lora","lora_path":"`+adapter+`"}`); code != 200 {
		t.Fatalf("load: %d", code)
	}
	if code := post("/v1/chat/completions", `{"model":"sql-lora","messages":[{"role":"user","content":"select"}],"max_tokens":2}`); code != 200 {
		t.Fatalf("chat to the adapter: %d", code)
	}
	if code := post("/v1/unload_lora_adapter", `{"lora_name":"sql-lora"}`); code != 200 {
		t.Fatalf("unload: %d", code)
	}
	if err := p.stop(); err != nil {
		t.Fatal(err)
	}
	evs, text := exported(t, dataDir)
	loaded, unloaded := ofType(evs, "model_loaded"), ofType(evs, "model_unloaded")
	if len(loaded) != 1 || len(unloaded) != 1 {
		t.Fatalf("%d model_loaded, %d model_unloaded:\n%s", len(loaded), len(unloaded), text)
	}
	if d := loaded[0]["details"].(map[string]any); d["model"] != "sql-lora" || d["checksum"] != adapterSum || d["base_checksum"] != baseSum {
		t.Errorf("model_loaded details %v, want checksum %s and base %s", d, adapterSum, baseSum)
	}
	var inferences []audit.Event
	seqOf := map[string]float64{}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		var ev audit.Event
		json.Unmarshal([]byte(line), &ev)
		if ev.Type == audit.TypeInference {
			inferences = append(inferences, ev)
			seqOf[ev.Path] = float64(ev.Log.Seq)
		}
	}
	if len(inferences) != 3 {
		t.Fatalf("%d inference events", len(inferences))
	}
	loadedAt := loaded[0]["log"].(map[string]any)["seq"].(float64)
	if loadedAt > seqOf["/v1/load_lora_adapter"] {
		t.Errorf("model_loaded (seq %v) comes after the load's own event (seq %v)", loadedAt, seqOf["/v1/load_lora_adapter"])
	}
	load, chat := inferences[0], inferences[1]
	if load.Model.Name != "sql-lora" || load.Model.Checksum != adapterSum {
		t.Errorf("the load's event: model %+v", load.Model)
	}
	if chat.Model.Name != "sql-lora" || chat.Model.Checksum != adapterSum || chat.Model.BaseChecksum != baseSum {
		t.Errorf("the first request to the adapter: model %+v, want checksum %s base %s", chat.Model, adapterSum, baseSum)
	}
}
