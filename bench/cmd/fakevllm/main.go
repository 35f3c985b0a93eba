// Command fakevllm runs the simulated vLLM OpenAI server of package
// internal/fakevllm as its own process, so that load tests measure it apart from
// the load generator and the proxy.
//
//	fakevllm -listen 127.0.0.1:8000 -model NAME -ttft 0s -itl 0s -output-tokens 16 \
//		[-force-include-usage off|final|every] [-allow-runtime-lora [-lora-resolver-dir DIR]]
//
// With -api-key KEY (repeatable), or else VLLM_API_KEY in the environment,
// it requires "Authorization: Bearer KEY" on /v1 as vLLM started with
// --api-key does; -api-key wins over the variable, as in vLLM.
//
// It serves until SIGINT or SIGTERM.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/auditproxy/auditproxy/internal/fakevllm"
)

func main() {
	var cfg fakevllm.Config
	listen := flag.String("listen", "127.0.0.1:8000", "address to listen on (port 0 picks a free one)")
	flag.StringVar(&cfg.Model, "model", "meta-llama/Llama-3.1-8B-Instruct", "served model name")
	flag.StringVar(&cfg.Root, "root", "", "model root reported by /v1/models (default /models/<model>)")
	flag.IntVar(&cfg.MaxModelLen, "max-model-len", 8192, "context length")
	flag.DurationVar(&cfg.TTFT, "ttft", 0, "delay before the first token")
	flag.DurationVar(&cfg.InterTokenLatency, "itl", 0, "delay between tokens")
	flag.IntVar(&cfg.OutputTokens, "output-tokens", 16, "tokens generated when a request has no max_tokens; max_tokens caps it")
	flag.StringVar(&cfg.Version, "version", "0.11.0", "vLLM version reported by /version")
	flag.BoolVar(&cfg.RequireModel, "require-model", false, `reject requests without "model" (vLLM accepts them)`)
	forceUsage := flag.String("force-include-usage", "off",
		"vLLM's --enable-force-include-usage: off, final (usage chunk at the end of every stream) or every (usage in every chunk too)")
	flag.BoolVar(&cfg.AllowRuntimeLoRA, "allow-runtime-lora", false,
		"serve /v1/load_lora_adapter and /v1/unload_lora_adapter (VLLM_ALLOW_RUNTIME_LORA_UPDATING)")
	flag.StringVar(&cfg.LoRAResolverDir, "lora-resolver-dir", "",
		"with -allow-runtime-lora, load an unknown model's adapter from this directory on first use (VLLM_LORA_RESOLVER_CACHE_DIR)")
	flag.Float64Var(&cfg.MaxAudioFileMB, "max-audio-file-mb", 25, "largest audio upload in MiB (VLLM_MAX_AUDIO_CLIP_FILESIZE_MB)")
	flag.IntVar(&cfg.MaxRequestBodySize, "max-request-body-size", 64<<20, "largest request body in bytes (vLLM sets none)")
	flag.Func("api-key", "require this bearer `key` on /v1 and vLLM's other guarded paths (repeat for several; default $VLLM_API_KEY)", func(k string) error {
		cfg.APIKeys = append(cfg.APIKeys, k)
		return nil
	})
	flag.Parse()
	if len(cfg.APIKeys) == 0 {
		cfg.APIKeys = []string{os.Getenv("VLLM_API_KEY")}
	}
	if flag.NArg() > 0 {
		log.Fatalf("fakevllm: unexpected arguments %q", flag.Args())
	}
	var err error
	if cfg.ForceIncludeUsage, err = fakevllm.ParseForceUsage(*forceUsage); err != nil {
		log.Fatalf("fakevllm: %v", err)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("fakevllm: %v", err)
	}
	srv := fakevllm.New(cfg)
	// The resolved address on stdout lets a parent that asked for port 0
	// learn where to connect.
	fmt.Printf("fakevllm listening on http://%s\n", ln.Addr())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		srv.Close()
	}()
	if err := srv.Serve(ln); err != nil {
		log.Fatalf("fakevllm: %v", err)
	}
}
