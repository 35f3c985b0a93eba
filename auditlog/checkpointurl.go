package auditlog

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"
)

// CheckpointPoster sends a copy of every checkpoint event to an HTTP
// endpoint, apart from the spool and the aggregator: a POST of the event's
// JSON (Content-Type application/json) per checkpoint, in order. Any 2xx
// answer is success; anything else is retried with backoff, so a slow or
// absent endpoint delays copies but never the spool. Checkpoints queued
// beyond a bound are dropped oldest first (each checkpoint supersedes the
// ones before it) and counted.
type CheckpointPoster struct {
	url     string
	client  *http.Client
	log     *slog.Logger
	ch      chan []byte
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	dropped atomic.Int64
}

// Dropped counts checkpoints dropped because the queue was full.
func (p *CheckpointPoster) Dropped() int64 { return p.dropped.Load() }

// NewCheckpointPoster starts posting to rawURL (http or https).
func NewCheckpointPoster(rawURL string, logger *slog.Logger) (*CheckpointPoster, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("checkpoint URL %q: want http(s)://HOST/PATH", rawURL)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &CheckpointPoster{url: rawURL, client: &http.Client{Timeout: 10 * time.Second}, log: logger,
		ch: make(chan []byte, 64), ctx: ctx, cancel: cancel, done: make(chan struct{})}
	go p.run()
	return p, nil
}

// Write queues cp's event for posting. It never blocks.
func (p *CheckpointPoster) Write(cp SignedCheckpoint) {
	event := cp.Event
	for {
		select {
		case p.ch <- event:
			return
		default:
		}
		select {
		case <-p.ch: // the oldest; the newer one commits to more
			p.dropped.Add(1)
		default:
		}
	}
}

func (p *CheckpointPoster) run() {
	defer close(p.done)
	for ev := range p.ch {
		for attempt := 0; ; attempt++ {
			err := p.post(ev)
			if err == nil {
				break
			}
			wait := min(100*time.Millisecond<<min(attempt, 9), 30*time.Second)
			p.log.Warn("cannot post a checkpoint; retrying", "url", p.url, "err", err, "retry_in", wait.String())
			select {
			case <-time.After(wait):
			case <-p.ctx.Done():
				return
			}
		}
	}
}

func (p *CheckpointPoster) post(ev []byte) error {
	req, err := http.NewRequestWithContext(p.ctx, http.MethodPost, p.url, bytes.NewReader(ev))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}

// Close posts what is queued, for at most timeout, then stops.
func (p *CheckpointPoster) Close(timeout time.Duration) error {
	close(p.ch)
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		p.cancel()
		<-p.done
		return fmt.Errorf("checkpoint URL %s: queued checkpoints not posted within %s", p.url, timeout)
	}
}
