// Package bench holds auditproxy's performance work: the load harness that
// compares a direct connection with one through the proxy and through plain
// proxies (harness; its upstream is internal/fakevllm, run as
// bench/cmd/fakevllm; its bare fasthttp proxy, the floor for a Go proxy,
// is bench/cmd/bareproxy), and Go benchmarks of the whole request path (this package's tests). Figures and the commands that produced them
// are in RESULTS.md.
package bench
