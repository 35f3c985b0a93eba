package fakevllm

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"
)

// Runtime LoRA adapters, as vLLM serves them with
// VLLM_ALLOW_RUNTIME_LORA_UPDATING (docs/vllm-wire-format.md, section e).
//
//   - POST /v1/load_lora_adapter {"lora_name","lora_path","load_inplace"}
//     answers 200 with the plain-text body
//     "Success: LoRA adapter '<name>' added successfully." and no
//     Content-Type; POST /v1/unload_lora_adapter {"lora_name"} answers
//     "Success: LoRA adapter '<name>' removed successfully.". Errors are
//     vLLM's ErrorResponse JSON. Without AllowRuntimeLoRA neither route
//     exists (404 {"detail":"Not Found"}).
//   - A loaded adapter is served at once: /v1/models lists it after the base
//     model with root = its path and parent = the base model's served name,
//     and a request naming it is answered with "model" = the adapter's name
//     (chat, completions) or the base name (pooling: embeddings, rerank,
//     score). After unload a request naming it gets vLLM's 404 model error.
//   - With LoRAResolverDir, a request naming an unknown model loads
//     <dir>/<name> on first use (vLLM's filesystem resolver): the adapter's
//     adapter_config.json must say peft_type LORA and base_model_name_or_path
//     equal to the base model (Config.Root, vLLM's --model).
//
// What makes a directory an adapter here: it exists and holds
// adapter_config.json (else vLLM's LoRAAdapterNotFoundError, 404); that file
// is a JSON object with peft_type "LORA" and the directory holds
// adapter_model.safetensors or adapter_model.bin (else the load fails, 500).

const (
	loraConfigFile = "adapter_config.json"
	loraTypeLoRA   = "LORA"
)

// loraWeightFiles are the weight files a PEFT adapter directory holds.
var loraWeightFiles = []string{"adapter_model.safetensors", "adapter_model.bin"}

// loraState is the set of loaded adapters. vLLM keeps them in a dict, so
// /v1/models lists them in load order and a reload in place keeps its place.
type loraState struct {
	mu       sync.RWMutex
	adapters map[string]*loraAdapter
	order    []string
}

type loraAdapter struct {
	name     string
	path     string
	nameJSON []byte
}

// Adapters returns the names of the loaded adapters in load order.
func (s *Server) Adapters() []string {
	s.lora.mu.RLock()
	defer s.lora.mu.RUnlock()
	return append([]string(nil), s.lora.order...)
}

// LoadAdapter loads the adapter in dir as name, the way
// POST /v1/load_lora_adapter does, for tests that set up a served adapter
// without an HTTP round trip. It returns the error vLLM would answer.
func (s *Server) LoadAdapter(name, dir string) error {
	if aerr := s.loadAdapter(name, dir, false); aerr != nil {
		return errors.New(aerr.msg)
	}
	return nil
}

// checkModel answers whether vLLM serves the model a request names: the base
// model, a loaded adapter, or (with a resolver) an adapter it can load now.
//
// An empty name is served like an absent one: vLLM's _is_model_supported
// accepts any falsy model.
func (s *Server) checkModel(name string) *apiError {
	if name == s.cfg.Model || name == "" {
		return nil
	}
	s.lora.mu.RLock()
	_, ok := s.lora.adapters[name]
	s.lora.mu.RUnlock()
	if ok {
		return nil
	}
	if s.cfg.AllowRuntimeLoRA && s.cfg.LoRAResolverDir != "" && name != "" {
		if aerr := s.resolveAdapter(name); aerr == nil || aerr.status == fasthttp.StatusBadRequest {
			return aerr
		}
	}
	return modelNotFound(name)
}

func modelNotFound(name string) *apiError {
	return &apiError{fasthttp.StatusNotFound, "NotFoundError", fmt.Sprintf("The model `%s` does not exist.", name)}
}

// servedModelJSON returns the "model" member of a generation answer:
// models.model_name(lora_request), the adapter's name when the request names
// one, else the first served name.
func (s *Server) servedModelJSON(v *fastjson.Value) []byte {
	m := member(v, "model")
	if m == nil || m.Type() != fastjson.TypeString {
		return s.modelJSON
	}
	name := m.GetStringBytes()
	if string(name) == s.cfg.Model {
		return s.modelJSON
	}
	s.lora.mu.RLock()
	defer s.lora.mu.RUnlock()
	if a, ok := s.lora.adapters[string(name)]; ok {
		return a.nameJSON
	}
	return s.modelJSON
}

// resolveAdapter is vLLM's FilesystemResolver: <dir>/<name>, never outside
// dir, with a matching adapter_config.json. A found adapter that does not
// load is a 400; nothing found is a 404.
func (s *Server) resolveAdapter(name string) *apiError {
	if filepath.IsAbs(name) {
		return modelNotFound(name)
	}
	dir, err := filepath.EvalSymlinks(s.cfg.LoRAResolverDir)
	if err != nil {
		return modelNotFound(name)
	}
	path := filepath.Join(dir, name)
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	if rel, err := filepath.Rel(dir, path); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return modelNotFound(name)
	}
	var cfg struct {
		PeftType string `json:"peft_type"`
		Base     string `json:"base_model_name_or_path"`
	}
	raw, err := os.ReadFile(filepath.Join(path, loraConfigFile))
	if err != nil || json.Unmarshal(raw, &cfg) != nil || cfg.PeftType != loraTypeLoRA || cfg.Base != s.cfg.Root {
		return modelNotFound(name)
	}
	if aerr := s.loadAdapter(name, path, false); aerr != nil {
		if aerr.status == fasthttp.StatusBadRequest {
			// Loaded by a concurrent request between the two checks.
			return nil
		}
		return badRequest("LoRA adapter '%s' was found but could not be loaded.", name)
	}
	return nil
}

// loadAdapter checks and registers an adapter: OpenAIServingModels
// load_lora_adapter with the fake's rule for what loads.
func (s *Server) loadAdapter(name, path string, inplace bool) *apiError {
	if name == "" || path == "" {
		return &apiError{fasthttp.StatusBadRequest, "InvalidUserInput", "Both 'lora_name' and 'lora_path' must be provided."}
	}
	s.lora.mu.Lock()
	defer s.lora.mu.Unlock()
	if _, ok := s.lora.adapters[name]; ok && !inplace {
		return &apiError{fasthttp.StatusBadRequest, "InvalidUserInput", "The lora adapter '" + name +
			"' has already been loaded. If you want to load the adapter in place, set 'load_inplace' to True."}
	}
	if aerr := checkAdapterDir(name, path); aerr != nil {
		return aerr
	}
	if s.lora.adapters == nil {
		s.lora.adapters = make(map[string]*loraAdapter)
	}
	if _, ok := s.lora.adapters[name]; !ok {
		s.lora.order = append(s.lora.order, name)
	}
	s.lora.adapters[name] = &loraAdapter{name: name, path: path, nameJSON: appendJSONString(nil, name)}
	return nil
}

// checkAdapterDir stands in for the engine's add_lora.
func checkAdapterDir(name, path string) *apiError {
	raw, err := os.ReadFile(filepath.Join(path, loraConfigFile))
	if err != nil {
		return &apiError{fasthttp.StatusNotFound, "NotFoundError",
			fmt.Sprintf("Loading lora %s failed: No adapter found for %s", name, path)}
	}
	var cfg struct {
		PeftType string `json:"peft_type"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil || cfg.PeftType != loraTypeLoRA {
		return &apiError{fasthttp.StatusInternalServerError, "InternalServerError",
			fmt.Sprintf("Loading lora %s failed: %s is not a LoRA adapter config", name, loraConfigFile)}
	}
	for _, f := range loraWeightFiles {
		if _, err := os.Stat(filepath.Join(path, f)); err == nil {
			return nil
		}
	}
	return &apiError{fasthttp.StatusInternalServerError, "InternalServerError",
		fmt.Sprintf("Loading lora %s failed: no adapter weights in %s", name, path)}
}

// loraRoute reports whether the runtime LoRA routes exist; vLLM only
// registers them with VLLM_ALLOW_RUNTIME_LORA_UPDATING.
func (s *Server) loraRoute(ctx *fasthttp.RequestCtx) bool {
	if !s.cfg.AllowRuntimeLoRA {
		writeDetail(ctx, fasthttp.StatusNotFound, "Not Found")
		return false
	}
	return s.allow(ctx, fasthttp.MethodPost) && s.requireJSON(ctx)
}

// loraBody parses the load/unload body. The request models are plain
// pydantic BaseModels: unknown members are ignored, the last of duplicates
// wins.
func loraBody(p *fastjson.Parser, body []byte, fields ...string) (map[string]*fastjson.Value, *apiError) {
	v, err := p.ParseBytes(body)
	if err != nil {
		return nil, badRequest("JSON decode error: %v", err)
	}
	if v.Type() != fastjson.TypeObject {
		return nil, badRequest("Input should be a valid dictionary or object to extract fields from: body")
	}
	out := make(map[string]*fastjson.Value, len(fields))
	for _, f := range fields {
		out[f] = member(v, f)
	}
	return out, nil
}

// loraString reads a required str field.
func loraString(v *fastjson.Value, field string) (string, *apiError) {
	if v == nil {
		return "", badRequest("Field required: body.%s", field)
	}
	if v.Type() != fastjson.TypeString {
		return "", badRequest("Input should be a valid string: body.%s", field)
	}
	return string(v.GetStringBytes()), nil
}

func (s *Server) loadLoRA(ctx *fasthttp.RequestCtx) {
	p := parserPool.Get()
	defer parserPool.Put(p)
	f, aerr := loraBody(p, ctx.PostBody(), "lora_name", "lora_path", "load_inplace")
	var name, path string
	inplace := false
	if aerr == nil {
		name, aerr = loraString(f["lora_name"], "lora_name")
	}
	if aerr == nil {
		path, aerr = loraString(f["lora_path"], "lora_path")
	}
	if aerr == nil && f["load_inplace"] != nil {
		var ok bool
		// load_inplace: bool = False; null is not a bool here.
		if inplace, ok = pyBool(f["load_inplace"]); !ok || f["load_inplace"].Type() == fastjson.TypeNull {
			aerr = badRequest("Input should be a valid boolean: body.load_inplace")
		}
	}
	if aerr == nil {
		aerr = s.loadAdapter(name, path, inplace)
	}
	if aerr != nil {
		s.writeError(ctx, aerr.status, aerr.typ, aerr.msg)
		return
	}
	writePlain(ctx, "Success: LoRA adapter '"+name+"' added successfully.")
}

func (s *Server) unloadLoRA(ctx *fasthttp.RequestCtx) {
	p := parserPool.Get()
	defer parserPool.Put(p)
	f, aerr := loraBody(p, ctx.PostBody(), "lora_name", "lora_int_id")
	var name string
	if aerr == nil {
		name, aerr = loraString(f["lora_name"], "lora_name")
	}
	if id := f["lora_int_id"]; aerr == nil && id != nil && id.Type() != fastjson.TypeNull {
		if _, err := id.Int(); err != nil {
			aerr = badRequest("Input should be a valid integer: body.lora_int_id")
		}
	}
	if aerr == nil {
		aerr = s.unloadAdapter(name)
	}
	if aerr != nil {
		s.writeError(ctx, aerr.status, aerr.typ, aerr.msg)
		return
	}
	writePlain(ctx, "Success: LoRA adapter '"+name+"' removed successfully.")
}

func (s *Server) unloadAdapter(name string) *apiError {
	if name == "" {
		return &apiError{fasthttp.StatusBadRequest, "InvalidUserInput", "'lora_name' needs to be provided to unload a LoRA adapter."}
	}
	s.lora.mu.Lock()
	defer s.lora.mu.Unlock()
	if _, ok := s.lora.adapters[name]; !ok {
		return &apiError{fasthttp.StatusNotFound, "NotFoundError", "The lora adapter '" + name + "' cannot be found."}
	}
	delete(s.lora.adapters, name)
	for i, n := range s.lora.order {
		if n == name {
			s.lora.order = append(s.lora.order[:i], s.lora.order[i+1:]...)
			break
		}
	}
	return nil
}

// writePlain writes Starlette's Response(content=str): the body, a
// Content-Length and no Content-Type at all (media_type is None).
func writePlain(ctx *fasthttp.RequestCtx, body string) {
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.Header.SetNoDefaultContentType(true)
	ctx.Response.SetBodyString(body)
}

// appendAdapterCards appends a /v1/models card for each loaded adapter:
// ModelCard(id=name, root=path, parent=base, permission=[...]) with
// max_model_len unset, hence null.
func (s *Server) appendAdapterCards(b []byte, now int64) []byte {
	s.lora.mu.RLock()
	defer s.lora.mu.RUnlock()
	for _, name := range s.lora.order {
		a := s.lora.adapters[name]
		b = append(b, `,{"id":`...)
		b = append(b, a.nameJSON...)
		b = append(b, `,"object":"model","created":`...)
		b = strconv.AppendInt(b, now, 10)
		b = append(b, `,"owned_by":"vllm","root":`...)
		b = appendJSONString(b, a.path)
		b = append(b, `,"parent":`...)
		b = append(b, s.modelJSON...)
		b = append(b, `,"max_model_len":null,"permission":[{"id":"modelperm-`...)
		b = appendHexID(b)
		b = append(b, `","object":"model_permission","created":`...)
		b = strconv.AppendInt(b, now, 10)
		b = append(b, `,"allow_create_engine":false,"allow_sampling":true,"allow_logprobs":true,`+
			`"allow_search_indices":false,"allow_view":true,"allow_fine_tuning":false,`+
			`"organization":"*","group":null,"is_blocking":false}]}`...)
	}
	return b
}
