// Package bench holds auditproxy's performance work: the load harness that
// compares a direct connection with one through the proxy (harness; its
// upstream is internal/fakevllm, run as bench/cmd/fakevllm), and Go
// benchmarks of the whole request path (this package's tests). Figures and the commands that produced them
// are in RESULTS.md.
package bench
