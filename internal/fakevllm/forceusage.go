package fakevllm

import "fmt"

// ForceUsage selects how the fake reproduces vLLM's
// --enable-force-include-usage, whose effect changed between releases
// (docs/vllm-wire-format.md, section f).
type ForceUsage uint8

const (
	// ForceUsageOff: usage only when the request asks (the flag unset).
	ForceUsageOff ForceUsage = iota
	// ForceUsageFinal: every stream ends with the usage-only chunk;
	// per-chunk usage still needs stream_options.continuous_usage_stats
	// (should_include_usage in vllm/entrypoints/utils.py).
	ForceUsageFinal
	// ForceUsageEvery: every stream carries usage in every chunk and ends
	// with the usage-only chunk, whatever stream_options says
	// (should_include_usage in serve/utils/api_utils.py, which returns
	// (True, True)).
	ForceUsageEvery
)

// ParseForceUsage reads the -force-include-usage flag: "", "off", "final" or
// "every".
func ParseForceUsage(s string) (ForceUsage, error) {
	switch s {
	case "", "off":
		return ForceUsageOff, nil
	case "final":
		return ForceUsageFinal, nil
	case "every":
		return ForceUsageEvery, nil
	}
	return ForceUsageOff, fmt.Errorf("force-include-usage: want off, final or every, got %q", s)
}

// String returns the flag spelling of f.
func (f ForceUsage) String() string {
	switch f {
	case ForceUsageFinal:
		return "final"
	case ForceUsageEvery:
		return "every"
	}
	return "off"
}

// apply turns what a chat or completion request asked (whether it sent
// stream_options, and its include_usage and continuous_usage_stats) into
// whether the stream carries the final usage chunk and per-chunk usage.
func (f ForceUsage) apply(optionsGiven, includeUsage, continuous bool) (usage, perChunk bool) {
	switch f {
	case ForceUsageEvery:
		return true, true
	case ForceUsageFinal:
		// include_usage = stream_options.include_usage or force, so a request
		// that said include_usage false still gets usage, and its
		// continuous_usage_stats then counts.
		return true, optionsGiven && continuous
	}
	return includeUsage, includeUsage && continuous
}
