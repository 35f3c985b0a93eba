package fakevllm

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
)

// writeAdapter creates a PEFT LoRA adapter directory; weights false leaves
// out the weight file, so the adapter is found but does not load.
func writeAdapter(t *testing.T, dir, base string, weights bool) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := `{"peft_type":"LORA","base_model_name_or_path":` + jsonString(base) + `,"r":8}`
	if err := os.WriteFile(filepath.Join(dir, loraConfigFile), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if weights {
		if err := os.WriteFile(filepath.Join(dir, "adapter_model.safetensors"), []byte("weights"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

type modelCard struct {
	ID          string  `json:"id"`
	Root        string  `json:"root"`
	Parent      *string `json:"parent"`
	MaxModelLen *int    `json:"max_model_len"`
}

func listModels(t *testing.T, base string) []modelCard {
	t.Helper()
	_, body := do(t, "GET", base+"/v1/models", "", nil)
	var l struct {
		Data []modelCard `json:"data"`
	}
	if err := json.Unmarshal(body, &l); err != nil {
		t.Fatalf("decoding %s: %v", body, err)
	}
	return l.Data
}

func TestLoRALoadServeUnload(t *testing.T) {
	s, base := startServer(t, Config{AllowRuntimeLoRA: true, OutputTokens: 2})
	dir := writeAdapter(t, filepath.Join(t.TempDir(), "sql"), s.Config().Root, true)

	// Before loading, the adapter's name is an unknown model.
	resp, body := postJSON(t, base+"/v1/chat/completions", `{"model":"sql-lora","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 404 {
		t.Fatalf("before load: status %d: %s", resp.StatusCode, body)
	}

	resp, body = postJSON(t, base+"/v1/load_lora_adapter", `{"lora_name":"sql-lora","lora_path":`+jsonString(dir)+`}`)
	if resp.StatusCode != 200 || string(body) != "Success: LoRA adapter 'sql-lora' added successfully." {
		t.Fatalf("load: status %d body %q", resp.StatusCode, body)
	}
	if ct, ok := resp.Header["Content-Type"]; ok {
		t.Errorf("load answer has Content-Type %q; Starlette's Response(content=str) sends none", ct)
	}

	// Listed at once, after the base model.
	cards := listModels(t, base)
	if len(cards) != 2 || cards[0].ID != testModel || cards[1].ID != "sql-lora" {
		t.Fatalf("models %+v", cards)
	}
	if c := cards[1]; c.Root != dir || c.Parent == nil || *c.Parent != testModel || c.MaxModelLen != nil {
		t.Errorf("adapter card %+v, want root %s, parent %s, max_model_len null", c, dir, testModel)
	}

	// Served: generation answers with the adapter's name, pooling with the base name.
	client := sdkClient(base)
	chat, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model: "sql-lora", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if chat.Model != "sql-lora" {
		t.Errorf("chat model %q, want the adapter's name", chat.Model)
	}
	_, events, err := postStream(t, base+"/v1/completions", `{"model":"sql-lora","prompt":"x","stream":true}`, nil)
	if err != nil || !strings.Contains(events[0], `"model":"sql-lora"`) {
		t.Errorf("stream chunk %v (%v), want model sql-lora", events, err)
	}
	emb, err := client.Embeddings.New(context.Background(), openai.EmbeddingNewParams{
		Model: "sql-lora", Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("x")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if emb.Model != testModel {
		t.Errorf("embeddings model %q, want the base name", emb.Model)
	}
	resp, body = postJSON(t, base+"/rerank", `{"model":"sql-lora","query":"q","documents":["d"]}`)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"model":"`+testModel+`"`) {
		t.Errorf("rerank with adapter: %d %s", resp.StatusCode, body)
	}

	resp, body = postJSON(t, base+"/v1/unload_lora_adapter", `{"lora_name":"sql-lora"}`)
	if resp.StatusCode != 200 || string(body) != "Success: LoRA adapter 'sql-lora' removed successfully." {
		t.Fatalf("unload: status %d body %q", resp.StatusCode, body)
	}
	if cards := listModels(t, base); len(cards) != 1 {
		t.Errorf("models after unload %+v", cards)
	}
	resp, body = postJSON(t, base+"/v1/chat/completions", `{"model":"sql-lora","messages":[{"role":"user","content":"hi"}]}`)
	if resp.StatusCode != 404 {
		t.Fatalf("after unload: status %d: %s", resp.StatusCode, body)
	}
	checkErrorBody(t, body, 404, "NotFoundError", "The model `sql-lora` does not exist.")
}

func TestLoRAModelsGolden(t *testing.T) {
	s, base := startServer(t, Config{AllowRuntimeLoRA: true})
	dir := writeAdapter(t, filepath.Join(t.TempDir(), "a1"), s.Config().Root, true)
	if err := s.LoadAdapter("a1", dir); err != nil {
		t.Fatal(err)
	}
	_, body := do(t, "GET", base+"/v1/models", "", nil)
	checkGolden(t, "models_with_adapter", strings.ReplaceAll(normalizeAll(body), jsonString(dir), `"ADAPTER_DIR"`))
}

func TestLoRAOrderAndInplace(t *testing.T) {
	s, base := startServer(t, Config{AllowRuntimeLoRA: true})
	tmp := t.TempDir()
	for _, n := range []string{"b", "a", "c"} {
		if err := s.LoadAdapter(n, writeAdapter(t, filepath.Join(tmp, n), s.Config().Root, true)); err != nil {
			t.Fatal(err)
		}
	}
	other := writeAdapter(t, filepath.Join(tmp, "a2"), s.Config().Root, true)
	resp, body := postJSON(t, base+"/v1/load_lora_adapter", `{"lora_name":"a","lora_path":`+jsonString(other)+`,"load_inplace":true}`)
	if resp.StatusCode != 200 {
		t.Fatalf("load in place: %d %s", resp.StatusCode, body)
	}
	cards := listModels(t, base)
	var ids []string
	for _, c := range cards {
		ids = append(ids, c.ID)
	}
	// Load order, and a reload in place keeps its place with its new path.
	if strings.Join(ids, ",") != testModel+",b,a,c" || cards[2].Root != other {
		t.Errorf("models %v (a's root %s)", ids, cards[2].Root)
	}
	if got := s.Adapters(); strings.Join(got, ",") != "b,a,c" {
		t.Errorf("Adapters() = %v", got)
	}
}

func TestLoRAErrors(t *testing.T) {
	s, base := startServer(t, Config{AllowRuntimeLoRA: true})
	_, off := startServer(t, Config{})
	tmp := t.TempDir()
	good := writeAdapter(t, filepath.Join(tmp, "good"), s.Config().Root, true)
	noWeights := writeAdapter(t, filepath.Join(tmp, "noweights"), s.Config().Root, false)
	notLoRA := filepath.Join(tmp, "notlora")
	os.MkdirAll(notLoRA, 0o755)
	os.WriteFile(filepath.Join(notLoRA, loraConfigFile), []byte(`{"peft_type":"IA3"}`), 0o644)
	if err := s.LoadAdapter("loaded", good); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, url, contentType, body string
		status                       int
		errType, msg                 string
	}{
		{"routes absent without the flag", off + "/v1/load_lora_adapter", "application/json", `{}`, 404, "", `{"detail":"Not Found"}`},
		{"unload route absent without the flag", off + "/v1/unload_lora_adapter", "application/json", `{}`, 404, "", `{"detail":"Not Found"}`},
		{"not JSON", base + "/v1/load_lora_adapter", "text/plain", `{}`, 400, "Bad Request", "Unsupported Media Type"},
		{"malformed JSON", base + "/v1/load_lora_adapter", "application/json", `{"lora_name":`, 400, "BadRequestError", "JSON decode error"},
		{"missing lora_path", base + "/v1/load_lora_adapter", "application/json", `{"lora_name":"x"}`, 400, "BadRequestError", "body.lora_path"},
		{"lora_name not a string", base + "/v1/load_lora_adapter", "application/json", `{"lora_name":1,"lora_path":"/x"}`, 400, "BadRequestError", "body.lora_name"},
		{"empty lora_name", base + "/v1/load_lora_adapter", "application/json", `{"lora_name":"","lora_path":"/x"}`, 400, "InvalidUserInput", "Both 'lora_name' and 'lora_path' must be provided."},
		{"already loaded", base + "/v1/load_lora_adapter", "application/json", `{"lora_name":"loaded","lora_path":` + jsonString(good) + `}`, 400, "InvalidUserInput", "has already been loaded"},
		{"load_inplace null", base + "/v1/load_lora_adapter", "application/json", `{"lora_name":"x","lora_path":"/x","load_inplace":null}`, 400, "BadRequestError", "body.load_inplace"},
		{"no adapter at the path", base + "/v1/load_lora_adapter", "application/json", `{"lora_name":"x","lora_path":"/nonexistent/adapter"}`, 404, "NotFoundError", "Loading lora x failed: No adapter found for /nonexistent/adapter"},
		{"not a LoRA config", base + "/v1/load_lora_adapter", "application/json", `{"lora_name":"x","lora_path":` + jsonString(notLoRA) + `}`, 500, "InternalServerError", "Loading lora x failed"},
		{"no weights", base + "/v1/load_lora_adapter", "application/json", `{"lora_name":"x","lora_path":` + jsonString(noWeights) + `}`, 500, "InternalServerError", "Loading lora x failed"},
		{"unload empty name", base + "/v1/unload_lora_adapter", "application/json", `{"lora_name":""}`, 400, "InvalidUserInput", "'lora_name' needs to be provided"},
		{"unload unknown", base + "/v1/unload_lora_adapter", "application/json", `{"lora_name":"ghost"}`, 404, "NotFoundError", "The lora adapter 'ghost' cannot be found."},
		{"unload bad lora_int_id", base + "/v1/unload_lora_adapter", "application/json", `{"lora_name":"loaded","lora_int_id":"x"}`, 400, "BadRequestError", "body.lora_int_id"},
		{"last lora_name wins", base + "/v1/unload_lora_adapter", "application/json", `{"lora_name":"loaded","lora_name":"ghost"}`, 404, "NotFoundError", "'ghost' cannot be found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, "POST", tc.url, tc.body, map[string]string{"Content-Type": tc.contentType})
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.errType == "" {
				if string(body) != tc.msg {
					t.Errorf("body %s, want %s", body, tc.msg)
				}
				return
			}
			checkErrorBody(t, body, tc.status, tc.errType, tc.msg)
		})
	}
	if got := s.Adapters(); len(got) != 1 || got[0] != "loaded" {
		t.Errorf("failed loads changed the adapters: %v", got)
	}
}

func TestLoRAResolver(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{AllowRuntimeLoRA: true, LoRAResolverDir: dir, OutputTokens: 1}
	s, base := startServer(t, cfg)
	root := s.Config().Root
	writeAdapter(t, filepath.Join(dir, "found"), root, true)
	writeAdapter(t, filepath.Join(dir, "other-base"), "/models/someone-else", true)
	writeAdapter(t, filepath.Join(dir, "broken"), root, false)
	writeAdapter(t, filepath.Join(filepath.Dir(dir), "outside"), root, true)
	tests := []struct {
		name, model string
		status      int
		msg         string
	}{
		{"found and loaded on first use", "found", 200, ""},
		{"served the second time from memory", "found", 200, ""},
		{"other base model", "other-base", 404, "The model `other-base` does not exist."},
		{"found but does not load", "broken", 400, "LoRA adapter 'broken' was found but could not be loaded."},
		{"outside the directory", "../outside", 404, "does not exist"},
		{"absolute name", "/etc", 404, "does not exist"},
		{"nothing there", "missing", 404, "The model `missing` does not exist."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := postJSON(t, base+"/v1/chat/completions", `{"model":`+jsonString(tc.model)+`,"messages":[{"role":"user","content":"hi"}]}`)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.status == 200 {
				if !strings.Contains(string(body), `"model":`+jsonString(tc.model)) {
					t.Errorf("answer %s", body)
				}
				return
			}
			typ := "NotFoundError"
			if tc.status == 400 {
				typ = "BadRequestError"
			}
			checkErrorBody(t, body, tc.status, typ, tc.msg)
		})
	}
	cards := listModels(t, base)
	if len(cards) != 2 || cards[1].ID != "found" || cards[1].Root != filepath.Join(dir, "found") {
		t.Errorf("models after resolving %+v", cards)
	}
	// Without the runtime flag the resolver does nothing.
	_, off := startServer(t, Config{LoRAResolverDir: dir})
	if resp, _ := postJSON(t, off+"/v1/completions", `{"model":"found","prompt":"x"}`); resp.StatusCode != 404 {
		t.Errorf("resolver without AllowRuntimeLoRA: status %d, want 404", resp.StatusCode)
	}
}
