// Package identity owns what a request was served by, beyond the request
// itself: the checksum of the model weights behind each served model name
// (a LoRA adapter's and its base model's), how those are discovered from the
// upstream and the weights directories and kept current (Models); the
// identity of the GPUs the upstream runs on, read through package gpu and
// kept current (GPU, gpu.go); the events that record them and their changes
// in the audit log; and operators' annotations of a change (annotate.go).
//
// Discovery: every poll reads the upstream's /v1/models. A served name's
// weights directory is the one given for it (--model-dir NAME=DIR, or DIR
// for every name), else its "root" when that is a local directory. An
// adapter (a card with "parent" set) gets its own checksum and its base's.
//
// While a directory is first hashed, requests for its model carry
// "checksum":"pending"; the model_changed event that follows in the log
// gives the checksum, and the manifest builder checks that no file changed
// while it was read, so the pending events were served by those weights.
// Later polls re-check the manifest (unchanged files are not read again)
// and record model_changed with before and after when it changes. Each poll
// also reads vLLM's /version and records upstream_version when it is new or
// changed.
//
// vLLM started with --api-key refuses /v1/models without "Authorization:
// Bearer KEY": the poller sends ModelsOptions.APIKey on its own requests
// (/v1/models and /version), and nowhere else. A poll that cannot read the
// served models makes the identity unknown, a state that is shown
// (auditproxy_model_identity_known, Status), logged and recorded
// (availability.go).
//
// # Events
//
// Operational events (audit.NewOpsEvent), with these details:
//
//	model_changed               {"model","dir","files","after"[,"before"]}
//	                            the weights behind a served name, first seen or changed
//	upstream_version            {"after"[,"before"]}
//	                            vLLM's /version, first seen or changed
//	model_identity_unavailable  {"reason","error"[,"status"][,"hint"]}
//	                            polls stopped reading /v1/models, or now fail for
//	                            another reason; reason is unauthorized (401/403),
//	                            unreachable or bad_response
//	model_identity_restored     {"reason","unavailable_since"}
//	                            a poll read /v1/models again after failing for reason
//	model_loaded                {"model","root"[,"parent"][,"checksum"][,"base_checksum"]}
//	                            a name vLLM did not serve at the previous poll is served:
//	                            a LoRA adapter loaded at run time or by a resolver, a
//	                            model of a restarted vLLM; checksum once its weights
//	                            are hashed (model_changed has the manifest)
//	model_unloaded              {"model"[,"checksum"]}
//	                            a name served at the previous poll is not any more
//
// A runtime LoRA load or unload that vLLM accepted makes the proxy call
// Refresh before the answer reaches the client, and a request vLLM served
// for a name no poll listed (an adapter a resolver loaded for it) calls
// Await: either way the adapter is identified, and its load recorded, from
// its first request on, not at the next poll.
//
// Checksums are "blake3:<hex>" (hashing.BuildManifest); times RFC 3339 UTC.
// No detail holds a credential: the API key is only ever in the request
// header.
package identity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/hashing"
)

// ChecksumPending is the checksum of a model whose weights are being hashed.
const ChecksumPending = "pending"

// ModelsOptions configure Models.
type ModelsOptions struct {
	// Upstream is the vLLM base URL whose /v1/models is polled.
	Upstream string
	// Dirs maps served model names to weights directories; the "" key
	// applies to every name without its own entry.
	Dirs map[string]string
	// CacheFile keeps digests between runs (see hashing.ManifestOptions).
	CacheFile string
	// Interval between polls. Default 30 s.
	Interval time.Duration
	// Record writes an event to the audit log.
	Record func(event []byte) error
	Source audit.Source
	Logger *slog.Logger
	// Client makes the requests. Default: a 10 s timeout, and redirects
	// are not followed (a redirect is a bad_response), so the API key goes
	// to the upstream and nowhere else.
	Client *http.Client
	// APIKey, if set, is sent as "Authorization: Bearer APIKey" on the
	// poller's requests to the upstream. It is never logged or recorded.
	APIKey string
	// UnauthorizedHint says what to do when the upstream refuses the
	// poller (401 or 403); it is shown with the failure.
	UnauthorizedHint string
}

// ModelIDs are the checksums events carry for one served name.
type ModelIDs struct {
	Checksum     string // of the name's weights (an adapter's own for a LoRA name)
	BaseChecksum string // of the base model, for a LoRA name
}

// Models keeps the checksums of the served models current.
type Models struct {
	opts   ModelsOptions
	cur    atomic.Pointer[map[string]ModelIDs]
	cancel context.CancelFunc
	done   chan struct{}

	// polling is held by the poll in progress: the background loop's, or
	// one Refresh or Await asked for.
	polling chan struct{}
	// listed is the served names of the last poll that read /v1/models,
	// nil before the first; unlisted, names Await polled for in vain, and
	// when (so that a name vLLM serves without listing it costs one poll
	// an Interval, not one a request).
	listed   atomic.Pointer[map[string]modelCard]
	recorded map[string]ModelIDs // the checksums of the last poll's names (under polling)
	unlisted map[string]time.Time
	// lastAwaitPoll is when Await last started a poll.
	lastAwaitPoll time.Time

	mu          sync.Mutex
	known       map[string]string // dir -> checksum recorded
	version     string            // upstream version recorded
	avail       *availability     // can the served models be read
	now         func() time.Time  // the clock of the identity state (tests set it)
	versionWarn throttle          // failures to read /version
}

// modelCard is the part of a /v1/models card used here.
type modelCard struct {
	ID     string  `json:"id"`
	Root   string  `json:"root"`
	Parent *string `json:"parent"`
}

// StartModels polls in the background until Close. The first poll starts at
// once.
func StartModels(opts ModelsOptions) *Models {
	m := newModels(opts)
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go m.run(ctx)
	return m
}

// newModels returns Models with the defaults filled in, not polling.
func newModels(opts ModelsOptions) *Models {
	if opts.Interval <= 0 {
		opts.Interval = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	m := &Models{opts: opts, done: make(chan struct{}), known: map[string]string{}, avail: newAvailability(), now: time.Now,
		polling: make(chan struct{}, 1), unlisted: map[string]time.Time{}}
	empty := map[string]ModelIDs{}
	m.cur.Store(&empty)
	return m
}

// Lookup returns the checksums for a served model name; zero when the name
// is unknown or its weights were not found.
func (m *Models) Lookup(name string) ModelIDs {
	return (*m.cur.Load())[name]
}

// Close stops polling.
func (m *Models) Close() {
	m.cancel()
	<-m.done
}

func (m *Models) run(ctx context.Context) {
	defer close(m.done)
	for {
		if err := m.Refresh(ctx); err != nil && ctx.Err() == nil {
			m.opts.Logger.Warn("cannot identify the served models", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(m.opts.Interval):
		}
	}
}

// Refresh polls now: reads /v1/models, records what was loaded or
// unloaded since the last poll, and hashes the weights of new names
// (unchanged files are not read again). A poll in progress is waited for
// first, within ctx.
func (m *Models) Refresh(ctx context.Context) error {
	select {
	case m.polling <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-m.polling }()
	return m.poll(ctx)
}

// Await returns the checksums of a name vLLM has just served. A name the
// last poll listed is answered at once (its checksums, pending or unknown
// as they are); another, an adapter a resolver loaded for this request say,
// is polled for first, within ctx, once an Interval at most, unless a poll
// is already in progress.
func (m *Models) Await(ctx context.Context, name string) ModelIDs {
	if m.Listed(name) {
		return m.Lookup(name)
	}
	m.mu.Lock()
	now := m.now()
	last, tried := m.unlisted[name]
	due := (!tried || now.Sub(last) >= m.opts.Interval) && now.Sub(m.lastAwaitPoll) >= awaitPollGap
	if due {
		m.lastAwaitPoll = now
		if len(m.unlisted) >= maxUnlisted {
			clear(m.unlisted)
		}
		m.unlisted[name] = m.now()
	}
	m.mu.Unlock()
	if due {
		// Not behind a poll in progress: one that hashes a large model
		// takes minutes, and this request's end would wait for it.
		select {
		case m.polling <- struct{}{}:
			m.poll(ctx)
			<-m.polling
		default:
		}
	}
	return m.Lookup(name)
}

// Listed reports whether the last poll of the served models listed name:
// Await returns at once for such a name.
func (m *Models) Listed(name string) bool {
	listed := m.listed.Load()
	if listed == nil {
		return false
	}
	_, ok := (*listed)[name]
	return ok
}

// maxUnlisted bounds the names Await remembers polling for in vain, and
// awaitPollGap spaces the polls Await starts, whatever the names: clients
// that name a new model in every request (which a vLLM with
// VLLM_SKIP_MODEL_NAME_VALIDATION serves) make one poll a second at most.
const (
	maxUnlisted  = 1024
	awaitPollGap = time.Second
)

// poll reads /v1/models and (re)hashes the weights of every served name.
// Called with polling held.
func (m *Models) poll(ctx context.Context) error {
	switch err := m.checkVersion(ctx); {
	case err == nil:
		m.versionWarn.reset()
	case ctx.Err() == nil && m.versionWarn.due(m.now()):
		m.opts.Logger.Warn("cannot read the upstream's version", "err", err, "repeated", "at most every "+warnEvery.String()+" while it lasts")
	}
	cards, perr := m.models(ctx)
	if ctx.Err() != nil {
		return nil // closing
	}
	m.report(perr, m.now())
	if perr != nil {
		return nil // reported
	}
	byID := map[string]modelCard{}
	for _, c := range cards {
		byID[c.ID] = c
	}
	// Listed at once, before any hashing: Await answers a listed name
	// without waiting for this poll.
	before := m.listed.Swap(&byID)
	dirOf := func(c modelCard) string {
		if d, ok := m.opts.Dirs[c.ID]; ok {
			return d
		}
		if d, ok := m.opts.Dirs[""]; ok && c.Parent == nil {
			return d
		}
		if fi, err := os.Stat(c.Root); err == nil && fi.IsDir() {
			return c.Root
		}
		return ""
	}
	// Names whose weights are being hashed for the first time are pending
	// meanwhile.
	prev := *m.cur.Load()
	next := map[string]ModelIDs{}
	for k, v := range prev {
		next[k] = v
	}
	m.mu.Lock()
	for _, c := range cards {
		if d := dirOf(c); d != "" && m.known[d] == "" {
			next[c.ID] = ModelIDs{Checksum: ChecksumPending}
		}
	}
	m.mu.Unlock()
	m.cur.Store(&next)

	sums := map[string]string{} // dir -> checksum
	idsOf := func() map[string]ModelIDs {
		ids := map[string]ModelIDs{}
		for _, c := range cards {
			d := dirOf(c)
			if d == "" || sums[d] == "" {
				continue
			}
			id := ModelIDs{Checksum: sums[d]}
			if c.Parent != nil {
				if base, ok := byID[*c.Parent]; ok {
					id.BaseChecksum = sums[dirOf(base)]
				}
			}
			ids[c.ID] = id
		}
		return ids
	}
	// A checksum is served to requests before its model_changed is
	// recorded: an event after that one in the log never says pending.
	publish := func(d, sum string) {
		sums[d] = sum
		upd := make(map[string]ModelIDs, len(next))
		maps.Copy(upd, next)
		maps.Copy(upd, idsOf())
		m.cur.Store(&upd)
	}
	var errs []error
	for _, c := range cards {
		d := dirOf(c)
		if d == "" {
			continue
		}
		if _, done := sums[d]; done {
			continue
		}
		if err := m.checksum(ctx, c.ID, d, publish); err != nil {
			errs = append(errs, err)
		}
	}
	final := idsOf()
	if ctx.Err() != nil {
		// Cut short (an Await's deadline passed): the names this poll did
		// not reach keep the checksums they had, rather than none until
		// the next poll.
		for _, c := range cards {
			if id, had := prev[c.ID]; had && id.Checksum != ChecksumPending {
				if _, ok := final[c.ID]; !ok {
					final[c.ID] = id
				}
			}
		}
	}
	m.cur.Store(&final)
	if err := m.recordServedChanges(before, byID, final); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// recordServedChanges records model_loaded and model_unloaded for the
// names served now and not at the last poll, and the other way round. The
// first poll records none: model_changed records what a sidecar finds
// served when it starts.
func (m *Models) recordServedChanges(before *map[string]modelCard, now map[string]modelCard, ids map[string]ModelIDs) error {
	if before == nil {
		return nil
	}
	prevIDs := m.recorded
	m.recorded = ids
	var errs []error
	record := func(typ string, details map[string]any) {
		ev, err := audit.NewOpsEvent(typ, details, m.opts.Source, time.Now())
		if err == nil && m.opts.Record != nil {
			err = m.opts.Record(ev)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("record %s: %w", typ, err))
		}
	}
	for _, name := range sortedNames(now) {
		if _, was := (*before)[name]; was {
			continue
		}
		c := now[name]
		details := map[string]any{"model": name, "root": c.Root}
		if c.Parent != nil {
			details["parent"] = *c.Parent
		}
		if id := ids[name]; id.Checksum != "" {
			details["checksum"] = id.Checksum
			if id.BaseChecksum != "" {
				details["base_checksum"] = id.BaseChecksum
			}
		}
		m.opts.Logger.Info("a model is served that was not", "model", name, "root", c.Root)
		record(audit.TypeModelLoaded, details)
	}
	for _, name := range sortedNames(*before) {
		if _, is := now[name]; is {
			continue
		}
		details := map[string]any{"model": name}
		if id := prevIDs[name]; id.Checksum != "" {
			details["checksum"] = id.Checksum
		}
		m.opts.Logger.Info("a model is no longer served", "model", name)
		record(audit.TypeModelUnloaded, details)
	}
	return errors.Join(errs...)
}

func sortedNames(cards map[string]modelCard) []string {
	names := make([]string, 0, len(cards))
	for name := range cards {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// checksum builds the manifest of dir, hands its checksum to publish, and
// then records a model_changed event when the checksum is new or changed.
func (m *Models) checksum(ctx context.Context, name, dir string, publish func(dir, sum string)) error {
	start := time.Now()
	lastLog := start
	man, err := hashing.BuildManifest(ctx, dir, hashing.ManifestOptions{CacheFile: m.opts.CacheFile,
		Progress: func(p hashing.ManifestProgress) {
			if !p.Done && time.Since(lastLog) >= 10*time.Second {
				lastLog = time.Now()
				m.opts.Logger.Info("hashing model weights", "model", name, "dir", dir,
					"done_bytes", p.BytesDone, "total_bytes", p.Bytes, "files_done", p.FilesDone, "files", p.Files)
			}
		}})
	if err != nil {
		return fmt.Errorf("model %s: %w", name, err)
	}
	if man.CacheErr != nil {
		m.opts.Logger.Warn("model manifest cache not used", "err", man.CacheErr)
	}
	m.mu.Lock()
	before := m.known[dir]
	m.known[dir] = man.Checksum
	m.mu.Unlock()
	publish(dir, man.Checksum)
	if before == man.Checksum {
		return nil
	}
	if man.HashedBytes > 0 {
		m.opts.Logger.Info("hashed model weights", "model", name, "dir", dir, "checksum", man.Checksum,
			"files", len(man.Files), "bytes_read", man.HashedBytes, "took", time.Since(start).Round(time.Millisecond).String())
	}
	details := map[string]any{"model": name, "dir": dir, "after": man.Checksum, "files": len(man.Files)}
	if before != "" {
		details["before"] = before
		m.opts.Logger.Warn("model weights changed", "model", name, "before", before, "after", man.Checksum)
	}
	ev, err := audit.NewOpsEvent(audit.TypeModelChanged, details, m.opts.Source, time.Now())
	if err == nil && m.opts.Record != nil {
		err = m.opts.Record(ev)
	}
	if err != nil {
		return fmt.Errorf("record model_changed: %w", err)
	}
	return nil
}

// maxModelsBody bounds the /v1/models answer read: thousands of cards.
const maxModelsBody = 16 << 20

// models reads the served models' cards from /v1/models.
func (m *Models) models(ctx context.Context) ([]modelCard, *pollError) {
	resp, err := m.get(ctx, "/v1/models")
	if err != nil {
		return nil, &pollError{reason: ReasonUnreachable, msg: "cannot reach vLLM for GET /v1/models: " + err.Error()}
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, &pollError{reason: ReasonUnauthorized, status: resp.StatusCode, msg: "vLLM answered " + resp.Status + " to GET /v1/models"}
	default:
		return nil, &pollError{reason: ReasonBadResponse, status: resp.StatusCode, msg: "vLLM answered " + resp.Status + " to GET /v1/models"}
	}
	cards, err := parseModelList(io.LimitReader(resp.Body, maxModelsBody+1))
	if err != nil {
		return nil, &pollError{reason: ReasonBadResponse, status: resp.StatusCode, msg: "vLLM's answer to GET /v1/models " + err.Error()}
	}
	return cards, nil
}

// parseModelList reads a /v1/models body: {"object":"list","data":[cards]}.
// Its errors complete "vLLM's answer to GET /v1/models ...".
func parseModelList(r io.Reader) ([]modelCard, error) {
	body, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("was cut: %v", err)
	}
	if len(body) > maxModelsBody {
		return nil, fmt.Errorf("is larger than %d MiB", maxModelsBody>>20)
	}
	var list struct {
		Data *[]modelCard `json:"data"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("is not a model list: %v", err)
	}
	if list.Data == nil {
		return nil, errors.New(`is not a model list: it has no "data" list`)
	}
	seen := map[string]bool{}
	for i, c := range *list.Data {
		if c.ID == "" {
			return nil, fmt.Errorf("has a model card without an id (data[%d])", i)
		}
		if seen[c.ID] {
			return nil, fmt.Errorf("lists model %q twice: which weights serve it is ambiguous", c.ID)
		}
		seen[c.ID] = true
	}
	return *list.Data, nil
}

// get sends the poller's GET for path to the upstream, with the API key.
func (m *Models) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(m.opts.Upstream, "/")+path, nil)
	if err != nil {
		return nil, err
	}
	if m.opts.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+m.opts.APIKey)
	}
	return m.opts.Client.Do(req)
}

// checkVersion records an upstream_version event when vLLM's /version
// answer is new or changed.
func (m *Models) checkVersion(ctx context.Context) error {
	resp, err := m.get(ctx, "/version")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /version: %s", resp.Status)
	}
	var v struct {
		Version string `json:"version"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&v); err != nil || v.Version == "" {
		return fmt.Errorf("GET /version: no version in the answer")
	}
	m.mu.Lock()
	before := m.version
	m.version = v.Version
	m.mu.Unlock()
	if before == v.Version {
		return nil
	}
	details := map[string]any{"after": v.Version}
	if before != "" {
		details["before"] = before
	}
	ev, err := audit.NewOpsEvent(audit.TypeUpstreamVersion, details, m.opts.Source, time.Now())
	if err == nil && m.opts.Record != nil {
		err = m.opts.Record(ev)
	}
	return err
}

// throttle lets a repeated warning through at most once per warnEvery;
// reset lets the next one through at once.
type throttle struct {
	mu sync.Mutex
	at time.Time
}

func (t *throttle) due(now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.at.IsZero() && now.Sub(t.at) < warnEvery {
		return false
	}
	t.at = now
	return true
}

func (t *throttle) reset() {
	t.mu.Lock()
	t.at = time.Time{}
	t.mu.Unlock()
}
