package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/auditproxy/auditproxy/internal/fakevllm"
	"github.com/valyala/fasthttp"
)

// The harness runs the fake and the proxy as separate processes. To test
// that path before cmd/auditproxy exists, the test binary doubles as both:
// with childEnv set it acts as `fakevllm` or, given `serve …`, as a bare
// fasthttp pass-through proxy standing in for auditproxy.
const (
	childEnv    = "HARNESS_TEST_CHILD"      // "1": act as a child process
	pidDirEnv   = "HARNESS_TEST_PID_DIR"    // children write their pid here
	failNowEnv  = "HARNESS_TEST_PROXY_FAIL" // "1": the stand-in proxy exits at once
	failMessage = "stand-in proxy refusing to start"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(childMain(os.Args[1:]))
	}
	code := m.Run()
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
	os.Exit(code)
}

func childMain(args []string) int {
	if dir := os.Getenv(pidDirEnv); dir != "" {
		os.WriteFile(filepath.Join(dir, strconv.Itoa(os.Getpid())), nil, 0o644)
	}
	var err error
	switch {
	case len(args) > 0 && args[0] == "serve":
		err = standInProxyMain(args[1:])
	case len(args) == 2 && args[0] == "-listen":
		err = standInReceiverMain(args[1])
	default:
		err = fakeMain(args)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	return 0
}

// fakeMain mirrors bench/cmd/fakevllm's flags, which the harness passes.
func fakeMain(args []string) error {
	var cfg fakevllm.Config
	fs := flag.NewFlagSet("fakevllm", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "")
	fs.IntVar(&cfg.OutputTokens, "output-tokens", 16, "")
	fs.DurationVar(&cfg.TTFT, "ttft", 0, "")
	fs.DurationVar(&cfg.InterTokenLatency, "itl", 0, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s := fakevllm.New(cfg)
	base, err := s.Start(*listen)
	if err != nil {
		return err
	}
	fmt.Println("fakevllm listening on", base)
	waitForSignal()
	return s.Close()
}

// standInProxyMain takes auditproxy's serve flags.
func standInProxyMain(args []string) error {
	if os.Getenv(failNowEnv) == "1" {
		return fmt.Errorf("%s", failMessage)
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	upstream := fs.String("upstream", "", "")
	listen := fs.String("listen", "", "")
	admin := fs.String("admin-listen", "", "")
	fs.String("data-dir", "", "")
	fs.String("forward", "", "")
	fs.String("durability", "", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	p, err := newPassProxy(*upstream)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	aln, err := net.Listen("tcp", *admin)
	if err != nil {
		return err
	}
	srv := &fasthttp.Server{Handler: p.handle}
	go srv.Serve(ln)
	go fasthttp.Serve(aln, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) != "/readyz" {
			ctx.SetStatusCode(fasthttp.StatusNotFound)
		}
	})
	waitForSignal()
	return nil
}

// standInReceiverMain stands in for bench/cmd/forwardrecv (`-listen
// ADDR`): it accepts connections and discards what comes; the stand-in proxy
// ships nothing.
func standInReceiverMain(listen string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	waitForSignal()
	return ln.Close()
}

func waitForSignal() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}

// passProxy is a bare fasthttp reverse proxy: the floor any proxy's cost is
// measured against. Requests that ask for a stream are answered as the
// upstream's bytes arrive; others are read whole and answered in one go,
// which costs far less per request.
type passProxy struct {
	buffered, streaming *fasthttp.HostClient
}

func newPassProxy(upstream string) (*passProxy, error) {
	u, err := url.Parse(upstream)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("--upstream %q: want http://host:port", upstream)
	}
	return &passProxy{
		buffered:  &fasthttp.HostClient{Addr: u.Host, MaxConns: 4096},
		streaming: &fasthttp.HostClient{Addr: u.Host, MaxConns: 4096, StreamResponseBody: true},
	}, nil
}

var streamTrue = []byte(`"stream":true`)

func (p *passProxy) handle(ctx *fasthttp.RequestCtx) {
	if !bytes.Contains(ctx.PostBody(), streamTrue) {
		if err := p.buffered.Do(&ctx.Request, &ctx.Response); err != nil {
			ctx.Error("upstream: "+err.Error(), fasthttp.StatusBadGateway)
		}
		return
	}
	resp := fasthttp.AcquireResponse()
	if err := p.streaming.Do(&ctx.Request, resp); err != nil {
		fasthttp.ReleaseResponse(resp)
		ctx.Error("upstream: "+err.Error(), fasthttp.StatusBadGateway)
		return
	}
	resp.Header.CopyTo(&ctx.Response.Header)
	ctx.SetBodyStream(&releasingBody{resp: resp}, -1)
}

// releasingBody hands the upstream response back only once the server has
// finished writing it; a stream left half-read closes its upstream
// connection, which is how the upstream learns the client went away.
type releasingBody struct {
	resp *fasthttp.Response
}

func (b *releasingBody) Read(p []byte) (int, error) { return b.resp.BodyStream().Read(p) }

func (b *releasingBody) CloseWithError(error) error {
	err := b.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(b.resp)
	return err
}

// startPassProxy runs a passProxy in this process in front of upstream.
func startPassProxy(t *testing.T, upstream string) string {
	t.Helper()
	p, err := newPassProxy(upstream)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: p.handle}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return "http://" + ln.Addr().String()
}

// startFakeAndPassProxy starts, in this process, a fake and the stand-in
// proxy in front of it, both stopped when the test ends.
func startFakeAndPassProxy(t *testing.T) (fake *fakevllm.Server, fakeURL, proxyURL string) {
	t.Helper()
	fake = fakevllm.New(fakevllm.Config{OutputTokens: 4096})
	fakeURL, err := fake.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	return fake, fakeURL, startPassProxy(t, fakeURL)
}
