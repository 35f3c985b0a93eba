package identity

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/gpu"
)

// GPUOptions configure OpenGPU.
type GPUOptions struct {
	// Visible is the GPU selection as gpu.Open takes it (e.g. a --gpus
	// flag); nil selects from the environment.
	Visible []string
	// Require makes OpenGPU fail when the identity cannot be read, rather
	// than go on without one.
	Require bool
	// Interval between re-reads of the identity. Default 1 min.
	Interval time.Duration
	// Record writes an event to the audit log.
	Record func(event []byte) error
	Source audit.Source
	Logger *slog.Logger

	// open opens the reader: gpu.Open, or a fake in tests.
	open func(visible []string) (gpuReader, error)
}

// gpuReader reads the identity of the selected GPUs: a *gpu.Reader.
type gpuReader interface {
	Read() (*gpu.Identity, error)
	Close() error
}

func openNVML(visible []string) (gpuReader, error) {
	r, err := gpu.Open(visible)
	if err != nil {
		return nil, err // not a non-nil interface holding a nil *gpu.Reader
	}
	return r, nil
}

// GPU keeps the identity of the GPUs the upstream runs on current, and
// records it and its changes in the audit log:
//
//	gpu_identity  {"digest","identity"}
//	              the identity read at start
//	gpu_changed   {"before":{"digest","identity"},"after":{"digest","identity"}}
//	              a re-read found another identity (a GPU swapped, MIG
//	              reconfigured, a driver upgraded)
//
// Events carry Current, the digest (gpu.Identity.Digest) of the identity
// last read.
type GPU struct {
	opts   GPUOptions
	r      gpuReader // nil without an identity
	cur    atomic.Pointer[string]
	first  *gpu.Identity // read by OpenGPU
	cancel context.CancelFunc
	done   chan struct{}
}

// OpenGPU reads the GPU identity; Start records it and watches it.
//
// Where the identity cannot be read (no NVML: no driver, no GPU, a build
// without cgo; or a selection naming no device) OpenGPU fails with Require,
// and otherwise logs one warning and returns a GPU whose Current is nil, so
// that events record "gpu": null.
//
// Reading and recording are apart so that the sidecar records what started
// (proxy_started, which names Current) before any event of the run: a run
// is opened by proxy_started (auditlog's verifier relies on it after a
// final checkpoint).
func OpenGPU(opts GPUOptions) (*GPU, error) {
	if opts.Interval <= 0 {
		opts.Interval = time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.open == nil {
		opts.open = openNVML
	}
	g := &GPU{opts: opts}
	var id *gpu.Identity
	r, err := opts.open(opts.Visible)
	if err == nil {
		if id, err = r.Read(); err != nil {
			r.Close()
		}
	}
	switch {
	case err != nil && opts.Require:
		return nil, err
	case err != nil:
		opts.Logger.Warn("no GPU identity: events record \"gpu\": null", "err", err)
		return g, nil
	}
	g.r, g.first = r, id
	digest := id.Digest()
	g.cur.Store(&digest)
	return g, nil
}

// Start records gpu_identity, the identity OpenGPU read, and re-reads it
// every Interval until Close, recording gpu_changed when it changes; a
// failed re-read is logged, and the last identity read stays current.
// Without an identity it does nothing.
func (g *GPU) Start() {
	if g == nil || g.r == nil || g.done != nil {
		return
	}
	g.record(audit.TypeGPUIdentity, map[string]any{"digest": *g.cur.Load(), "identity": g.first})
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel, g.done = cancel, make(chan struct{})
	go g.watch(ctx, g.first)
}

// Current returns the digest of the GPU identity last read; nil without
// one (and on a nil GPU).
func (g *GPU) Current() *string {
	if g == nil {
		return nil
	}
	return g.cur.Load()
}

// Close stops the re-reads and closes the reader.
func (g *GPU) Close() error {
	if g == nil || g.r == nil {
		return nil
	}
	if g.done != nil {
		g.cancel()
		<-g.done
	}
	return g.r.Close()
}

// watch re-reads the identity every interval until ctx is done; last is the
// identity read before.
func (g *GPU) watch(ctx context.Context, last *gpu.Identity) {
	defer close(g.done)
	t := time.NewTicker(g.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		id, err := g.r.Read()
		if err != nil {
			g.opts.Logger.Warn("cannot re-read the GPU identity", "err", err)
			continue
		}
		if before, after := last.Digest(), id.Digest(); after != before {
			g.record(audit.TypeGPUChanged, map[string]any{"before": map[string]any{"digest": before, "identity": last},
				"after": map[string]any{"digest": after, "identity": id}})
			g.cur.Store(&after)
			g.opts.Logger.Warn("GPU identity changed", "before", before, "after", after)
			last = id
		}
	}
}

// record records an operational event, logging a failure.
func (g *GPU) record(typ string, details any) {
	ev, err := audit.NewOpsEvent(typ, details, g.opts.Source, time.Now())
	if err == nil && g.opts.Record != nil {
		err = g.opts.Record(ev)
	}
	if err != nil {
		g.opts.Logger.Error("cannot record an operational event", "type", typ, "err", err)
	}
}
