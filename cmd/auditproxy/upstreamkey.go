package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// vLLM started with --api-key (or VLLM_API_KEY) refuses /v1 requests
// without "Authorization: Bearer KEY" (docs/vllm-wire-format.md,
// "Authentication"), the sidecar's own GET /v1/models included: without
// the key no served model is identified. --upstream-api-key-file names a
// file holding one key vLLM accepts, typically the same Kubernetes Secret
// vLLM's VLLM_API_KEY comes from. The sidecar sends it only on its own
// requests to vLLM (the model poller's /v1/models and /version, the
// readiness probe's /health); clients' requests go upstream with their own
// Authorization, untouched. The key is held in memory only: never in a
// flag value (ps would show it, and the configuration digest of
// proxy_started covers flag values), a log line, an event or a metric.

// maxUpstreamKeyBytes bounds the key file: a key is one short line, and a
// large file is the wrong file.
const maxUpstreamKeyBytes = 4096

// readUpstreamAPIKey reads the key from path: the file's text without its
// trailing whitespace (the newline an editor or `echo` leaves; no HTTP
// header can carry trailing whitespace, so vLLM could not match a key that
// ends in it). Anything else that cannot be a key is a usage error, and no
// error quotes the file's content.
func readUpstreamAPIKey(path string) (string, error) {
	const flag = "--upstream-api-key-file"
	f, err := os.Open(path)
	if err != nil {
		return "", usageError{fmt.Sprintf("%s: %v", flag, err)}
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxUpstreamKeyBytes+1))
	if err != nil {
		return "", usageError{fmt.Sprintf("%s: %v", flag, err)}
	}
	if len(b) > maxUpstreamKeyBytes {
		return "", usageError{fmt.Sprintf("%s %s: longer than %d bytes, so not an API key file", flag, path, maxUpstreamKeyBytes)}
	}
	key := strings.TrimRight(string(b), " \t\r\n")
	if key == "" {
		return "", usageError{fmt.Sprintf("%s %s: the file is empty; it must hold the key vLLM was started with (--api-key or VLLM_API_KEY)", flag, path)}
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return "", usageError{fmt.Sprintf("%s %s: byte %d is a control character (a second line?); the file must hold one key on one line", flag, path, i+1)}
		}
	}
	return key, nil
}

// unauthorizedHint is what the sidecar says when vLLM refuses its
// /v1/models: what to set, or that the key set is not one vLLM accepts.
func unauthorizedHint(keyFile string) string {
	if keyFile == "" {
		return "vLLM requires an API key (--api-key or VLLM_API_KEY): set --upstream-api-key-file to a file that holds it"
	}
	return fmt.Sprintf("the key in --upstream-api-key-file %s is not one vLLM accepts: give the file that holds vLLM's --api-key", keyFile)
}
