package proxy

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
)

// AdminOptions configure AdminHandler.
type AdminOptions struct {
	// ProfilingToken, if set, serves Go's profiler under /debug/pprof/ to
	// requests that carry it as a bearer token. Empty leaves the profiler
	// off: a profile shows what the process holds (a heap profile shows
	// allocation sites, a goroutine dump the request paths in flight) and a
	// CPU profile costs CPU on the serving cores, so it is not for whoever
	// can reach the metrics port.
	ProfilingToken string
	// Degraded, if set, returns what the sidecar serves without (one line
	// each; none when all is well), for /readyz to show. It does not make
	// /readyz fail: see AdminHandler.
	Degraded func() []string
}

// AdminHandler serves the admin listener: /metrics in the Prometheus text
// format, /healthz (the process is up), /readyz (the upstream answers its
// /health) and, when opts says so, Go's profiler under /debug/pprof/. It is
// a net/http handler: the admin port is not a hot path. /metrics, /healthz
// and /readyz need no credentials, as Prometheus and kubelet expect; they
// show counts and model names, never request content.
//
// /readyz answers 200 "ok" while the upstream's /health answers 200, and
// 503 "not ready: ..." otherwise. Each line of opts.Degraded follows as
// "degraded: ...": the sidecar serves and records every request, but
// something its events should carry is missing (the model checksum while
// the served models cannot be identified). That does not fail readiness:
// a readiness failure takes the pod out of its Service, so a sidecar whose
// vLLM refuses it /v1/models would drop all traffic, on every replica at
// once, over a gap in the record that a restart does not fix. The metrics
// and the log say it loudly instead.
func (p *Proxy) AdminHandler(g prometheus.Gatherer, opts AdminOptions) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: nil}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	if opts.ProfilingToken != "" {
		mux.Handle("/debug/pprof/", requireBearer(opts.ProfilingToken, http.HandlerFunc(pprof.Index)))
		mux.Handle("/debug/pprof/profile", requireBearer(opts.ProfilingToken, http.HandlerFunc(pprof.Profile)))
		mux.Handle("/debug/pprof/trace", requireBearer(opts.ProfilingToken, http.HandlerFunc(pprof.Trace)))
	}
	probe := &upstreamProbe{p: p}
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		var degraded []string
		if opts.Degraded != nil {
			degraded = opts.Degraded()
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if err := probe.check(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: "+err.Error())
		} else {
			fmt.Fprintln(w, "ok")
		}
		for _, d := range degraded {
			fmt.Fprintln(w, "degraded: "+d)
		}
	})
	return mux
}

// requireBearer serves next only to requests with "Authorization: Bearer
// token"; others get 401.
func requireBearer(token string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="auditproxy admin"`)
			http.Error(w, "a valid bearer token is required (the admin token file)", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
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
	if p.cfg.UpstreamAPIKey != "" {
		req.Header.Set(fasthttp.HeaderAuthorization, "Bearer "+p.cfg.UpstreamAPIKey)
	}
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
