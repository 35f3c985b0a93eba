package proxy

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
)

// AdminHandler serves the admin listener: /metrics in the Prometheus text
// format, /healthz (the process is up), /readyz (the upstream answers its
// /health) and Go's profiler under /debug/pprof/. It is a net/http handler:
// the admin port is not a hot path, and it must not be exposed beyond
// operators (its default address is loopback).
func (p *Proxy) AdminHandler(g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: nil}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	probe := &upstreamProbe{p: p}
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := probe.check(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// upstreamProbe asks the upstream's /health, at most once a second however
// often /readyz is polled.
type upstreamProbe struct {
	p    *Proxy
	mu   sync.Mutex
	last time.Time
	err  error
}

func (u *upstreamProbe) check() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if time.Since(u.last) < time.Second {
		return u.err
	}
	u.err = u.p.checkUpstream(2 * time.Second)
	u.last = time.Now()
	return u.err
}

func (p *Proxy) checkUpstream(timeout time.Duration) error {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("/health")
	req.Header.SetHost(p.client.Addr)
	req.Header.SetMethod(fasthttp.MethodGet)
	// The body streams (the client streams every response); /health has
	// none worth reading, and releasing it closes the connection if needed.
	if err := p.client.DoTimeout(req, resp, timeout); err != nil {
		return fmt.Errorf("upstream /health: %w", err)
	}
	if code := resp.StatusCode(); code != fasthttp.StatusOK {
		return fmt.Errorf("upstream /health answered %d", code)
	}
	return nil
}
