// Package witness is the client of a C2SP tlog-witness
// (https://c2sp.org/tlog-witness): it submits each checkpoint of the log
// with a consistency proof from the size the witness last cosigned, keeps
// the cosignatures it gets, and tells the log which stored hashes the next
// proof needs.
package witness

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/auditproxy/auditproxy/auditlog"
	"github.com/auditproxy/auditproxy/internal/fsutil"
)

// Options configure a Client.
type Options struct {
	// URL is the witness's submission prefix (http or https): checkpoints
	// are posted to URL + "/add-checkpoint".
	URL string
	// StateFile, if set, remembers the size (and root) of the last
	// checkpoint the witness cosigned, per origin, across restarts. It is
	// replaced atomically. Without it every start begins at "old 0" and
	// learns the witness's size from its 409 answer.
	StateFile string
	// CosignatureFile, if set, gets one JSON line per cosigned checkpoint:
	// {"origin":…,"size":N,"note":"<the checkpoint note with the witness's
	// signature lines appended>"}.
	CosignatureFile string
	Logger          *slog.Logger
	// Client defaults to an http.Client with a 30 s timeout.
	Client *http.Client
}

// Client submits each checkpoint to a C2SP tlog-witness
// (https://c2sp.org/tlog-witness) and keeps its cosignatures.
//
// For a checkpoint of size N, with M the size the witness last cosigned for
// the origin (0 at first), it posts
//
//	old M\n
//	<consistency proof from M to N, one base64 hash per line>
//	\n
//	<the signed checkpoint note>
//
// to URL/add-checkpoint. On 200 the answer's signature lines are appended to
// the note and kept in CosignatureFile, and M becomes N. On 409 the witness
// says its own size K: the checkpoint is sent again once from K when K <= N;
// K > N means the witness cosigned a bigger tree of this origin than the log
// now has, a rollback or a fork, and is logged as an error (alert=log_fork),
// as is a 422 (the log is not an extension of what the witness cosigned) and
// a 409 at an equal size (a different tree of the same size). Other failures
// are retried with capped exponential backoff.
//
// Checkpoints are queued and sent in the background, in order; a newer
// checkpoint of an origin replaces an older one still queued, since it
// commits to everything the older one does. Submit never blocks.
//
// The witness's cosignatures are stored as received: this client does not
// hold the witness's public key and does not verify them; whoever reads
// CosignatureFile verifies them with the witness keys it trusts (as the
// spec says, unknown keys are to be ignored there).
type Client struct {
	endpoint string
	opts     Options
	log      *slog.Logger
	client   *http.Client

	mu      sync.Mutex
	lg      Log           // set by Start
	queue   []witnessItem // at most one per origin, oldest first
	seq     uint64
	closing bool

	wake      chan struct{} // capacity 1: something was queued
	closingCh chan struct{} // closed when Close starts
	ctx       context.Context
	cancel    context.CancelFunc
	done      chan struct{}

	// Owned by the worker goroutine (and New before it starts).
	state map[string]witnessLogState

	cosignedN, forkAlerts, failures atomic.Int64 // for Register
}

// Register registers the witness client's metrics with reg. An alert to
// page on: auditproxy_witness_fork_alerts_total increasing.
func (w *Client) Register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "auditproxy_witness_cosigned_total",
			Help: "Checkpoints the witness (--witness-url) cosigned.",
		}, func() float64 { return float64(w.cosignedN.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "auditproxy_witness_fork_alerts_total",
			Help: "Alerts logged with alert=log_fork: a checkpoint that the witness's state or answer shows to be a rollback or a fork of this log (one fork may raise two: the local check, then the witness's answer).",
		}, func() float64 { return float64(w.forkAlerts.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "auditproxy_witness_failures_total",
			Help: "Submissions to the witness that failed and will be retried (unreachable, error answers).",
		}, func() float64 { return float64(w.failures.Load()) }),
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// witnessItem is a queued checkpoint.
type witnessItem struct {
	seq    uint64
	origin string
	size   int64
	root   tlog.Hash
	note   []byte // the signed checkpoint note
}

// witnessLogState is what the witness cosigned last for one origin.
type witnessLogState struct {
	Size int64  `json:"size"`
	Root string `json:"root"` // standard base64
}

// witnessStateFile is the StateFile's content. Witness is the URL the
// sizes were cosigned by: a state file of another witness is not used.
type witnessStateFile struct {
	Version int                        `json:"version"`
	Witness string                     `json:"witness"`
	Logs    map[string]witnessLogState `json:"logs"`
}

// witnessCosignature is a CosignatureFile line.
type witnessCosignature struct {
	Origin string `json:"origin"`
	Size   int64  `json:"size"`
	Note   string `json:"note"`
}

const (
	witnessBackoffMin   = 500 * time.Millisecond
	witnessBackoffMax   = time.Minute
	witnessCloseBackoff = 200 * time.Millisecond // between retries once Close started
	witnessMaxProof     = 63                     // proof lines the spec allows
	witnessMaxBody      = 64 << 10
	witnessSizeType     = "text/x.tlog.size"
	witnessForkAlert    = "log_fork"
)

// New starts a witness client.
func New(opts Options) (*Client, error) {
	u, err := url.Parse(opts.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("witness URL %q: want http(s)://HOST[/PREFIX]", opts.URL)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 30 * time.Second}
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Client{
		endpoint:  strings.TrimSuffix(opts.URL, "/") + "/add-checkpoint",
		opts:      opts,
		log:       opts.Logger.With("witness", opts.URL),
		client:    opts.Client,
		wake:      make(chan struct{}, 1),
		closingCh: make(chan struct{}),
		ctx:       ctx,
		cancel:    cancel,
		done:      make(chan struct{}),
		state:     make(map[string]witnessLogState),
	}
	w.loadState()
	return w, nil
}

// Log is the log whose checkpoints a Client submits (an auditlog.Log): its
// stored hashes give the consistency proofs, and it is told the size the
// witness cosigned for an origin, at Start (from Options.StateFile) and
// after each cosignature, so that it keeps its stored hashes from there on.
type Log interface {
	tlog.HashReader
	WitnessCosigned(origin string, size int64)
}

// Start starts submitting to the witness the checkpoints of lg, those
// submitted before included. The log must be open: a Client is made
// before it, so that its first checkpoints are not missed, and started
// once it is.
func (w *Client) Start(lg Log) {
	w.mu.Lock()
	if w.lg != nil || w.closing {
		w.mu.Unlock()
		return
	}
	w.lg = lg
	sizes := make(map[string]int64, len(w.state))
	for origin, ls := range w.state {
		sizes[origin] = ls.Size
	}
	w.mu.Unlock()
	for origin, size := range sizes {
		lg.WitnessCosigned(origin, size)
	}
	go w.run()
}

// Submit queues a checkpoint (as auditlog.Options.OnCheckpoint hands it
// on) for the witness. It never blocks.
func (w *Client) Submit(cp auditlog.SignedCheckpoint) {
	it := witnessItem{origin: cp.Origin, size: cp.Size, root: cp.Root, note: cp.Note}
	w.mu.Lock()
	if w.closing {
		w.mu.Unlock()
		w.log.Warn("witness: checkpoint submitted after Close; dropped", "origin", it.origin, "size", it.size)
		return
	}
	w.seq++
	it.seq = w.seq
	queued := false
	for i, q := range w.queue {
		if q.origin != it.origin {
			continue
		}
		if q.size <= it.size { // the newer one commits to all the older one does
			w.queue[i] = it
		}
		queued = true
		break
	}
	if !queued {
		w.queue = append(w.queue, it)
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Close sends what is queued, for at most timeout, then stops. It returns
// an error when checkpoints were left unsent.
func (w *Client) Close(timeout time.Duration) error {
	w.mu.Lock()
	if !w.closing {
		w.closing = true
		close(w.closingCh)
		if w.lg == nil {
			close(w.done) // never started: no run to end
		}
	}
	w.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-w.done:
	case <-t.C:
		w.cancel()
		<-w.done
	}
	w.cancel()
	w.mu.Lock()
	left := len(w.queue)
	w.mu.Unlock()
	if left > 0 {
		return fmt.Errorf("witness %s: %d checkpoint(s) not cosigned within %s", w.opts.URL, left, timeout)
	}
	return nil
}

// witnessOutcome is what became of one attempt at a checkpoint.
type witnessOutcome int

const (
	witnessDone    witnessOutcome = iota // cosigned, or nothing to send
	witnessRefused                       // refused for good: dropped, the next one waits the backoff
	witnessRetry                         // sent again after the backoff
)

func (w *Client) run() {
	defer close(w.done)
	failures := 0
	for {
		it, ok := w.next()
		if !ok {
			return
		}
		out := w.send(it)
		w.finish(it, out == witnessRetry)
		if out == witnessDone {
			failures = 0
			continue
		}
		wait := min(witnessBackoffMin<<min(failures, 10), witnessBackoffMax)
		failures++
		if !w.sleep(wait) {
			return
		}
	}
}

// next returns the oldest queued checkpoint, waiting for one; false once
// Close started and the queue is empty, or Close's time is up.
func (w *Client) next() (witnessItem, bool) {
	for {
		if w.ctx.Err() != nil {
			return witnessItem{}, false
		}
		w.mu.Lock()
		if len(w.queue) > 0 {
			it := w.queue[0]
			w.mu.Unlock()
			return it, true
		}
		closing := w.closing
		w.mu.Unlock()
		if closing {
			return witnessItem{}, false
		}
		select {
		case <-w.wake:
		case <-w.closingCh:
		case <-w.ctx.Done():
		}
	}
}

// finish takes it off the queue, unless a newer checkpoint replaced it
// meanwhile; one to retry goes to the back of the queue.
func (w *Client) finish(it witnessItem, retry bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, q := range w.queue {
		if q.seq != it.seq {
			continue
		}
		w.queue = append(w.queue[:i], w.queue[i+1:]...)
		if retry {
			w.queue = append(w.queue, it)
		}
		return
	}
}

// sleep waits d, less once Close started; false when Close's time is up.
func (w *Client) sleep(d time.Duration) bool {
	closing := w.closingCh
	select {
	case <-w.closingCh:
		d, closing = min(d, witnessCloseBackoff), nil
	default:
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-closing:
	case <-w.ctx.Done():
		return false
	}
	return w.ctx.Err() == nil
}

// send submits one checkpoint, following one 409 to the witness's size.
func (w *Client) send(it witnessItem) witnessOutcome {
	log := w.log.With("origin", it.origin, "size", it.size)
	prev, known := w.state[it.origin]
	old := prev.Size
	if known {
		switch {
		case it.size < prev.Size:
			w.forkAlerts.Add(1)
			log.Error("witness: this checkpoint is smaller than one the witness already cosigned for this origin: the log was rolled back",
				"alert", witnessForkAlert, "cosigned_size", prev.Size)
			return witnessRefused
		case it.size == prev.Size:
			if prev.Root == base64.StdEncoding.EncodeToString(it.root[:]) {
				return witnessDone // already cosigned
			}
			w.forkAlerts.Add(1)
			log.Error("witness: this checkpoint has another root than the one the witness cosigned at this size: the log was forked",
				"alert", witnessForkAlert, "cosigned_root", prev.Root, "root", base64.StdEncoding.EncodeToString(it.root[:]))
			// Sent anyway: the witness's answer confirms it.
		}
	}
	for attempt := 0; ; attempt++ {
		log := log.With("old", old)
		body, err := w.request(it, old)
		if err != nil {
			w.failures.Add(1)
			log.Error("witness: cannot make the consistency proof", "err", err)
			return witnessRetry
		}
		status, ctype, resp, err := w.post(body)
		if err != nil {
			w.failures.Add(1)
			log.Warn("witness: cannot submit the checkpoint; retrying", "err", err)
			return witnessRetry
		}
		switch status {
		case http.StatusOK:
			return w.cosigned(log, it, resp)
		case http.StatusConflict:
			k, err := parseWitnessSize(resp)
			if err != nil {
				w.failures.Add(1)
				log.Warn("witness: 409 without its tree size; retrying", "err", err, "content_type", ctype)
				return witnessRetry
			}
			switch {
			case k > it.size:
				w.forkAlerts.Add(1)
				log.Error("witness: the witness cosigned a bigger tree of this origin than this checkpoint's: the log was rolled back or forked",
					"alert", witnessForkAlert, "witness_size", k)
				return witnessRefused
			case k == old && old == it.size:
				// The sizes agree, so the 409 is the witness's other
				// conflict: old == size with another root.
				w.forkAlerts.Add(1)
				log.Error("witness: the witness cosigned another tree of this size: the log was forked",
					"alert", witnessForkAlert, "witness_size", k)
				return witnessRefused
			case k == old || attempt > 0:
				w.failures.Add(1)
				log.Warn("witness: 409 again after following the witness's size; retrying later", "witness_size", k)
				return witnessRetry
			}
			if known && k < prev.Size {
				log.Warn("witness: the witness is behind the size it cosigned for this log before (did it lose its state?)",
					"witness_size", k, "cosigned_size", prev.Size)
			} else {
				log.Info("witness: following the witness's tree size", "witness_size", k)
			}
			old = k
		case http.StatusUnprocessableEntity:
			w.forkAlerts.Add(1)
			log.Error("witness: the witness refused the consistency proof: the log is not an extension of the tree it cosigned (a fork), or the stored hashes are damaged",
				"alert", witnessForkAlert, "answer", witnessSnippet(resp))
			return witnessRefused
		case http.StatusBadRequest:
			log.Error("witness: the witness found the request malformed", "answer", witnessSnippet(resp))
			return witnessRefused
		case http.StatusForbidden:
			w.failures.Add(1)
			log.Error("witness: the witness does not accept the checkpoint's signature (is this log's key configured there?); retrying",
				"answer", witnessSnippet(resp))
			return witnessRetry
		case http.StatusNotFound:
			w.failures.Add(1)
			log.Error("witness: the witness does not know this log's origin; retrying", "answer", witnessSnippet(resp))
			return witnessRetry
		default:
			w.failures.Add(1)
			log.Warn("witness: the witness answered an error; retrying", "status", status, "answer", witnessSnippet(resp))
			return witnessRetry
		}
	}
}

// request builds the add-checkpoint body for it from old.
func (w *Client) request(it witnessItem, old int64) ([]byte, error) {
	var proof tlog.TreeProof
	if old > 0 && old < it.size {
		var err error
		if proof, err = tlog.ProveTree(it.size, old, w.lg); err != nil {
			return nil, err
		}
		if len(proof) > witnessMaxProof {
			return nil, fmt.Errorf("proof of %d hashes, more than the %d allowed", len(proof), witnessMaxProof)
		}
	}
	b := make([]byte, 0, 32+len(proof)*45+len(it.note))
	b = append(b, "old "...)
	b = strconv.AppendInt(b, old, 10)
	b = append(b, '\n')
	for _, h := range proof {
		b = base64.StdEncoding.AppendEncode(b, h[:])
		b = append(b, '\n')
	}
	b = append(b, '\n')
	return append(b, it.note...), nil
}

// post sends one add-checkpoint request and reads the answer.
func (w *Client) post(body []byte) (status int, ctype string, resp []byte, err error) {
	req, err := http.NewRequestWithContext(w.ctx, http.MethodPost, w.endpoint, bytes.NewReader(body))
	if err != nil {
		return 0, "", nil, err
	}
	req.Header.Set("User-Agent", "auditproxy-witness-client")
	r, err := w.client.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer r.Body.Close()
	resp, err = io.ReadAll(io.LimitReader(r.Body, witnessMaxBody))
	io.Copy(io.Discard, io.LimitReader(r.Body, witnessMaxBody)) // for keep-alive
	if err != nil {
		return 0, "", nil, err
	}
	return r.StatusCode, r.Header.Get("Content-Type"), resp, nil
}

// cosigned keeps the witness's cosignature of it.
func (w *Client) cosigned(log *slog.Logger, it witnessItem, resp []byte) witnessOutcome {
	// The witness moved to it.size whatever the answer holds.
	w.state[it.origin] = witnessLogState{Size: it.size, Root: base64.StdEncoding.EncodeToString(it.root[:])}
	if err := w.saveState(); err != nil {
		log.Error("witness: cannot save the witness state", "err", err)
	} else {
		// Only once the state file says so: after a crash before it, the
		// next start proves from the size the file holds.
		w.lg.WitnessCosigned(it.origin, it.size)
	}
	sigs, bad := parseWitnessSignatures(resp)
	if bad > 0 {
		log.Warn("witness: ignored malformed lines in the witness's answer", "lines", bad)
	}
	if len(sigs) == 0 {
		log.Error("witness: the witness accepted the checkpoint but returned no signature lines", "answer", witnessSnippet(resp))
		return witnessDone
	}
	cosignedNote := append([]byte(nil), it.note...)
	for _, s := range sigs {
		if !bytes.Contains(cosignedNote, []byte(s)) {
			cosignedNote = append(cosignedNote, s...)
		}
	}
	if w.opts.CosignatureFile != "" {
		if err := appendWitnessCosignature(w.opts.CosignatureFile, witnessCosignature{Origin: it.origin, Size: it.size, Note: string(cosignedNote)}); err != nil {
			log.Error("witness: cannot keep the cosignature", "err", err)
		}
	}
	w.cosignedN.Add(1)
	log.Info("witness: checkpoint cosigned", "signatures", len(sigs))
	return witnessDone
}

// parseWitnessSignatures returns the note signature lines of a 200 answer
// ("— <name> <base64 of key hash and signature>\n") and counts the other
// non-empty lines.
func parseWitnessSignatures(resp []byte) (sigs []string, bad int) {
	for line := range strings.Lines(string(resp)) {
		l := strings.TrimSuffix(line, "\n")
		if l == "" {
			continue
		}
		rest, ok := strings.CutPrefix(l, "— ")
		name, b64, ok2 := strings.Cut(rest, " ")
		sig, err := base64.StdEncoding.DecodeString(b64)
		if !ok || !ok2 || name == "" || strings.ContainsAny(name, "+ \t") || err != nil || len(sig) < 5 {
			bad++
			continue
		}
		sigs = append(sigs, l+"\n")
	}
	return sigs, bad
}

// parseWitnessSize reads a 409 answer's body: a decimal size and a newline.
func parseWitnessSize(resp []byte) (int64, error) {
	s := strings.TrimSuffix(string(resp), "\n")
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("body %q is not a tree size (%s)", witnessSnippet(resp), witnessSizeType)
	}
	return n, nil
}

func witnessSnippet(b []byte) string {
	const max = 200
	s := strings.TrimSpace(string(b))
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

func (w *Client) loadState() {
	if w.opts.StateFile == "" {
		return
	}
	b, err := os.ReadFile(w.opts.StateFile)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	var st witnessStateFile
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err == nil && st.Version != 1 {
		err = fmt.Errorf("unknown version %d", st.Version)
	}
	if err != nil {
		w.log.Warn("witness: cannot read the witness state; starting from old size 0", "file", w.opts.StateFile, "err", err)
		return
	}
	if st.Witness != w.opts.URL {
		w.log.Info("witness: the witness state is of another witness; starting from old size 0", "file", w.opts.StateFile, "state_witness", st.Witness)
		return
	}
	for origin, ls := range st.Logs {
		w.state[origin] = ls
	}
}

// saveState replaces the state file atomically.
func (w *Client) saveState() error {
	if w.opts.StateFile == "" {
		return nil
	}
	b, err := json.Marshal(witnessStateFile{Version: 1, Witness: w.opts.URL, Logs: w.state})
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(w.opts.StateFile, append(b, '\n'))
}

func appendWitnessCosignature(path string, c witnessCosignature) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(buf.Bytes())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
