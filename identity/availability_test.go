package identity

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/internal/fakevllm"
)

// recorder collects recorded events and log lines.
type recorder struct {
	mu     sync.Mutex
	events []map[string]any
	logs   bytes.Buffer
}

func (r *recorder) Record(ev []byte) error {
	var m map[string]any
	if err := json.Unmarshal(ev, &m); err != nil {
		return err
	}
	r.mu.Lock()
	r.events = append(r.events, m)
	r.mu.Unlock()
	return nil
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.logs.Write(p)
}

// identityEvents returns the recorded events about the identity state.
func (r *recorder) identityEvents() []map[string]any {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []map[string]any
	for _, e := range r.events {
		if t := e["type"]; t == audit.TypeModelIdentityUnavailable || t == audit.TypeModelIdentityRestored {
			out = append(out, e)
		}
	}
	return out
}

func (r *recorder) warnings() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Count(r.logs.String(), `"msg":"model identity unknown`)
}

func (r *recorder) logText() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.logs.String()
}

// TestIdentityStateFollowsThePolls drives the poller through a sequence of
// upstream answers, one poll each at a set time, and checks the state, the
// metrics, the change events and how often it warns.
func TestIdentityStateFollowsThePolls(t *testing.T) {
	var answer atomic.Value // what /v1/models does next
	answer.Store("ok")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/version" {
			fmt.Fprint(w, `{"version":"0.11.0"}`)
			return
		}
		switch answer.Load().(string) {
		case "ok":
			fmt.Fprint(w, `{"object":"list","data":[{"id":"m","root":"/nowhere","parent":null}]}`)
		case "401":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(401)
			fmt.Fprint(w, `{"error":"Unauthorized"}`)
		case "500":
			w.WriteHeader(500)
		case "not json":
			fmt.Fprint(w, `<html>`)
		case "hang up":
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close()
		}
	}))
	defer srv.Close()
	rec := &recorder{}
	hint := "set --upstream-api-key-file to the file that holds vLLM's --api-key"
	m := newModels(ModelsOptions{Upstream: srv.URL, Record: rec.Record, UnauthorizedHint: hint,
		Logger: slog.New(slog.NewJSONHandler(rec, nil))})
	reg := prometheus.NewRegistry()
	if err := m.Register(reg); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	steps := []struct {
		at       time.Duration
		answer   string
		known    bool
		reason   string
		event    string // type of the event this poll records, if any
		warnings int    // WARNs about the identity so far
	}{
		{0, "ok", true, "", "", 0},
		{time.Minute, "401", false, ReasonUnauthorized, audit.TypeModelIdentityUnavailable, 1},
		{2 * time.Minute, "401", false, ReasonUnauthorized, "", 1},
		{5 * time.Minute, "401", false, ReasonUnauthorized, "", 1},
		{6 * time.Minute, "401", false, ReasonUnauthorized, "", 2}, // warnEvery after the first
		{7 * time.Minute, "hang up", false, ReasonUnreachable, audit.TypeModelIdentityUnavailable, 3},
		{8 * time.Minute, "500", false, ReasonBadResponse, audit.TypeModelIdentityUnavailable, 4},
		{9 * time.Minute, "not json", false, ReasonBadResponse, "", 4},
		{10 * time.Minute, "ok", true, "", audit.TypeModelIdentityRestored, 4},
		{11 * time.Minute, "ok", true, "", "", 4},
	}
	events := 0
	for i, st := range steps {
		answer.Store(st.answer)
		now := t0.Add(st.at)
		m.now = func() time.Time { return now }
		if err := m.poll(context.Background()); err != nil {
			t.Fatalf("step %d: poll: %v", i, err)
		}
		s := m.Status()
		if s.Known != st.known || s.Reason != st.reason || !s.Polled {
			t.Errorf("step %d (%s): status %+v, want known %v reason %q", i, st.answer, s, st.known, st.reason)
		}
		if got := testutil.ToFloat64(m.avail.known); got != map[bool]float64{true: 1}[st.known] {
			t.Errorf("step %d: auditproxy_model_identity_known %v", i, got)
		}
		evs := rec.identityEvents()
		if st.event != "" {
			events++
		}
		if len(evs) != events || (st.event != "" && evs[len(evs)-1]["type"] != st.event) {
			t.Errorf("step %d (%s): identity events %v, want %d, the last %q", i, st.answer, evs, events, st.event)
		}
		if w := rec.warnings(); w != st.warnings {
			t.Errorf("step %d (%s): %d warnings, want %d", i, st.answer, w, st.warnings)
		}
	}

	evs := rec.identityEvents()
	if len(evs) != 4 {
		t.Fatalf("%d identity events", len(evs))
	}
	wantDetails := []string{
		`{"error":"vLLM answered 401 Unauthorized to GET /v1/models","hint":"` + hint + `","reason":"unauthorized","status":401}`,
		`{"error":"cannot reach vLLM for GET /v1/models: Get \"` + srv.URL + `/v1/models\": EOF","reason":"unreachable"}`,
		`{"error":"vLLM answered 500 Internal Server Error to GET /v1/models","reason":"bad_response","status":500}`,
		`{"reason":"bad_response","unavailable_since":"2026-12-05T10:08:00.000000000Z"}`,
	}
	for i, e := range evs {
		got, _ := json.Marshal(e["details"])
		if string(got) != wantDetails[i] {
			t.Errorf("event %d (%s) details:\n got %s\nwant %s", i, e["type"], got, wantDetails[i])
		}
	}
	want := `
# HELP auditproxy_model_identity_poll_failures_total Polls of the upstream's /v1/models that failed, by reason: unauthorized (401 or 403: vLLM's --api-key; see --upstream-api-key-file), unreachable (no answer), bad_response (another status, or not a model list).
# TYPE auditproxy_model_identity_poll_failures_total counter
auditproxy_model_identity_poll_failures_total{reason="bad_response"} 2
auditproxy_model_identity_poll_failures_total{reason="unauthorized"} 4
auditproxy_model_identity_poll_failures_total{reason="unreachable"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "auditproxy_model_identity_poll_failures_total"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("metric lint: %v %+v", err, problems)
	}
	if !strings.Contains(rec.logText(), `"fix":"`+hint+`"`) {
		t.Errorf("the 401 warning does not say what to do:\n%s", rec.logText())
	}
}

// TestProblemLine: what /readyz shows in each state.
func TestProblemLine(t *testing.T) {
	since := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		s    IdentityStatus
		want string
	}{
		{IdentityStatus{}, ""},
		{IdentityStatus{Polled: true, Known: true}, ""},
		{IdentityStatus{Polled: true, Reason: ReasonUnauthorized, Error: "vLLM answered 401 Unauthorized to GET /v1/models", Hint: "set --upstream-api-key-file", Since: since},
			"model identity unknown since 2026-12-05T10:00:00Z (unauthorized): vLLM answered 401 Unauthorized to GET /v1/models; set --upstream-api-key-file; events carry no model checksum meanwhile"},
		{IdentityStatus{Polled: true, Reason: ReasonUnreachable, Error: "cannot reach vLLM", Since: since},
			"model identity unknown since 2026-12-05T10:00:00Z (unreachable): cannot reach vLLM; events carry no model checksum meanwhile"},
	} {
		if got := tt.s.Problem(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.s, got, tt.want)
		}
	}
}

// TestFirstPollRefused: a sidecar whose first poll is refused records the
// state at once, and nothing is restored until a poll succeeds.
func TestFirstPollRefused(t *testing.T) {
	fake := fakevllm.New(fakevllm.Config{APIKeys: []string{"sk-vllm"}})
	upstream, err := fake.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	rec := &recorder{}
	m := StartModels(ModelsOptions{Upstream: upstream, Interval: 5 * time.Millisecond, Record: rec.Record,
		Logger: slog.New(slog.NewJSONHandler(rec, nil))})
	waitUntil(t, func() bool { return fake.Stats().Unauthorized >= 5 })
	m.Close()
	evs := rec.identityEvents()
	if len(evs) != 1 || evs[0]["type"] != audit.TypeModelIdentityUnavailable {
		t.Fatalf("identity events: %v", evs)
	}
	if s := m.Status(); s.Known || s.Reason != ReasonUnauthorized {
		t.Errorf("status %+v", s)
	}
	if w := rec.warnings(); w != 1 {
		t.Errorf("%d warnings over %d refused polls, want 1:\n%s", w, fake.Stats().Unauthorized, rec.logText())
	}
}

// TestPollerSendsTheAPIKey: with the key, the poller reads vLLM's
// /v1/models behind --api-key and the weights are identified; the key is in
// no log line and no event.
func TestPollerSendsTheAPIKey(t *testing.T) {
	const key = "sk-vllm-7f3a9c1e5b"
	dir := t.TempDir()
	writeModel(t, dir, "weights")
	fake := fakevllm.New(fakevllm.Config{APIKeys: []string{key}, Root: dir})
	upstream, err := fake.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	rec := &recorder{}
	m := StartModels(ModelsOptions{Upstream: upstream, Interval: 5 * time.Millisecond, Record: rec.Record, APIKey: key,
		CacheFile: filepath.Join(t.TempDir(), "cache.json"), Logger: slog.New(slog.NewJSONHandler(rec, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	want := manifestChecksum(t, dir)
	waitUntil(t, func() bool { return m.Lookup(fake.Config().Model).Checksum == want })
	m.Close()
	if s := m.Status(); !s.Known {
		t.Errorf("status %+v", s)
	}
	if n := fake.Stats().Unauthorized; n != 0 {
		t.Errorf("%d polls refused", n)
	}
	if evs := rec.identityEvents(); len(evs) != 0 {
		t.Errorf("identity events on a healthy start: %v", evs)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	all, _ := json.Marshal(rec.events)
	if strings.Contains(string(all)+rec.logs.String(), key) {
		t.Error("the API key is in an event or a log line")
	}
	if !strings.Contains(string(all), `"type":"model_changed"`) {
		t.Errorf("no model_changed: %s", all)
	}
}

// TestRedirectIsNotFollowed: a redirect from /v1/models is a bad answer;
// the key never reaches where it points.
func TestRedirectIsNotFollowed(t *testing.T) {
	var elsewhere atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		fmt.Fprint(w, `{"data":[]}`)
	}))
	defer other.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer srv.Close()
	m := newModels(ModelsOptions{Upstream: srv.URL, APIKey: "sk-secret"})
	m.poll(context.Background())
	if s := m.Status(); s.Reason != ReasonBadResponse || !strings.Contains(s.Error, "307") {
		t.Errorf("status %+v", s)
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("%d requests followed the redirect", n)
	}
}

// TestParseModelList: a /v1/models body and its hostile twins.
func TestParseModelList(t *testing.T) {
	big := `{"data":[` + strings.Repeat(`{"id":"x","root":"`+strings.Repeat("a", 1000)+`"},`, maxModelsBody/1000) + `{"id":"y"}]}`
	for _, tt := range []struct {
		name, body string
		ids        []string
		err        string
	}{
		{"vLLM's list", `{"object":"list","data":[{"id":"a","object":"model","root":"/m","parent":null},{"id":"b","root":"/l","parent":"a"}]}`, []string{"a", "b"}, ""},
		{"no models", `{"object":"list","data":[]}`, nil, ""},
		{"not JSON", `<html>`, nil, "is not a model list: invalid character '<'"},
		{"cut short", `{"data":[{"id":"a"`, nil, "is not a model list: unexpected end of JSON input"},
		{"no data", `{"object":"list"}`, nil, `it has no "data" list`},
		{"data null", `{"data":null}`, nil, `it has no "data" list`},
		{"data not a list", `{"data":{"id":"a"}}`, nil, "is not a model list: json: cannot unmarshal object"},
		{"not an object", `[]`, nil, "is not a model list: json: cannot unmarshal array"},
		{"a card without an id", `{"data":[{"id":"a"},{"root":"/m"}]}`, nil, "has a model card without an id (data[1])"},
		{"an id twice", `{"data":[{"id":"a","root":"/m1"},{"id":"a","root":"/m2"}]}`, nil, `lists model "a" twice`},
		{"larger than the bound", big, nil, "is larger than 16 MiB"},
		{"empty", ``, nil, "is not a model list: unexpected end of JSON input"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cards, err := parseModelList(strings.NewReader(tt.body))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, c := range cards {
				ids = append(ids, c.ID)
			}
			if fmt.Sprint(ids) != fmt.Sprint(tt.ids) {
				t.Errorf("ids %v, want %v", ids, tt.ids)
			}
		})
	}
}

// FuzzParseModelList: any body is a list of cards with distinct non-empty
// ids, or an error; never a panic.
func FuzzParseModelList(f *testing.F) {
	for _, s := range []string{`{"object":"list","data":[{"id":"a","root":"/m","parent":null}]}`, `{"data":[]}`, `{"data":null}`, `<`, `{"data":[{"id":"a"},{"id":"a"}]}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		cards, err := parseModelList(strings.NewReader(body))
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, c := range cards {
			if c.ID == "" || seen[c.ID] {
				t.Fatalf("accepted %q: cards %+v", body, cards)
			}
			seen[c.ID] = true
		}
	})
}
