package fakevllm

import (
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// BenchmarkChatHandler measures the fake's own cost per non-streamed chat
// answer (1 KiB prompt, ~2 KiB answer), which load tests must keep far below
// the proxy's.
func BenchmarkChatHandler(b *testing.B) {
	s := New(Config{OutputTokens: 4096})
	body := []byte(`{"model":"` + testModel + `","messages":[{"role":"user","content":"` +
		strings.Repeat("lorem ipsum ", 85) + `"}],"max_tokens":300}`)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var ctx fasthttp.RequestCtx
		for pb.Next() {
			ctx.Request.Reset()
			ctx.Response.Reset()
			ctx.Request.Header.SetMethod(fasthttp.MethodPost)
			ctx.Request.SetRequestURI("/v1/chat/completions")
			ctx.Request.SetBody(body)
			s.Handler(&ctx)
			if ctx.Response.StatusCode() != 200 || len(ctx.Response.Body()) < 2000 {
				b.Fatalf("status %d body %d bytes", ctx.Response.StatusCode(), len(ctx.Response.Body()))
			}
		}
	})
}
