package forward

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/internal/testutil"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/auditproxy/auditproxy/internal/forwardrecv"
	"github.com/auditproxy/auditproxy/spool"
)

func fastForward(addr string) Options {
	return Options{Address: "tcp://" + addr, AckTimeout: 300 * time.Millisecond,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond, StateInterval: 10 * time.Millisecond}
}

func startShipper(t *testing.T, s *spool.Spool, opts Options) *Shipper {
	t.Helper()
	sh, err := New(s, opts)
	if err != nil {
		t.Fatal(err)
	}
	sh.Start()
	t.Cleanup(func() { sh.Close() })
	return sh
}

// recordIDs returns the "id" of every entry, in arrival order.
func recordIDs(entries []forwardrecv.Entry) []string {
	ids := make([]string, len(entries))
	for i, e := range entries {
		ids[i], _ = e.Record["id"].(string)
	}
	return ids
}

// TestShippedRecordsEqualTheEvents: what the receiver decodes, field by
// field, is the event's JSON object, under the configured tag, with the
// event's time as the entry time.
func TestShippedRecordsEqualTheEvents(t *testing.T) {
	recv := testutil.StartReceiver(t, "127.0.0.1:0", forwardrecv.Config{})
	s := openTestSpool(t, t.TempDir(), spool.Options{Forwarding: true})
	opts := fastForward(recv.Addr())
	opts.Tag = "audit.test"
	sh := startShipper(t, s, opts)
	events := []string{
		`{"v":1,"type":"inference","id":"a","time":"2026-11-23T10:00:00.123456789Z","stream":true,"model":{"name":"m"},` +
			`"input":{"hash":"blake3:00ff","bytes":1234,"tokens":20},"api_key_id":null,` +
			`"latency_ms":{"total":12.5,"ttft":0.25},"status":{"code":200,"outcome":"ok"},"tags":["x",1,-2.5e-3]}`,
		`{"v":1,"id":"b","time":"2026-11-23T10:00:01Z","text":"caf\u00e9 \"quoted\"\n","big":18446744073709551615,"neg":-9223372036854775808}`,
	}
	for _, ev := range events {
		if err := s.Append([]byte(ev)); err != nil {
			t.Fatal(err)
		}
	}
	if !recv.WaitFor(len(events), 5*time.Second) {
		t.Fatalf("receiver has %d of %d events", recv.Len(), len(events))
	}
	for i, e := range recv.Entries() {
		var want map[string]any
		dec := json.NewDecoder(strings.NewReader(events[i]))
		dec.UseNumber()
		if err := dec.Decode(&want); err != nil {
			t.Fatal(err)
		}
		if got := normalize(e.Record); fmt.Sprint(got) != fmt.Sprint(normalize(want)) {
			t.Errorf("event %d:\n got  %v\n want %v", i, got, normalize(want))
		}
		if e.Tag != "audit.test" {
			t.Errorf("tag %q", e.Tag)
		}
		wantTime, _ := time.Parse(time.RFC3339Nano, want["time"].(string))
		if !e.Time.Equal(wantTime) {
			t.Errorf("entry time %v, want %v", e.Time, wantTime)
		}
	}
	testutil.WaitFor(t, "ack recorded", func() bool { c, _ := s.Committed(); return s.Acked() == c })
	if got := promtest.ToFloat64(sh.metrics.acked); got != 2 {
		t.Errorf("acked metric %v", got)
	}
	if sh.ShipLag() != 0 {
		t.Errorf("ship lag %v with everything acknowledged", sh.ShipLag())
	}
}

// normalize renders numbers as their decimal text so that msgpack ints and
// floats compare with JSON numbers.
func normalize(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[k] = normalize(x)
		}
		return m
	case []any:
		for i := range v {
			v[i] = normalize(v[i])
		}
		return v
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return fmt.Sprint(i)
		}
		if strings.ContainsAny(string(v), ".eE") {
			f, _ := v.Float64()
			return fmt.Sprint(f)
		}
		return string(v)
	case int64, uint64, float64:
		return fmt.Sprint(v)
	}
	return v
}

// TestAtLeastOnceThroughAckLossAndDroppedConnections: a receiver that
// withholds acks, then drops connections, then acks: every event arrives,
// in order of first arrival, and duplicates are whole resent batches.
func TestAtLeastOnceThroughAckLossAndDroppedConnections(t *testing.T) {
	recv := testutil.StartReceiver(t, "127.0.0.1:0", forwardrecv.Config{})
	s := openTestSpool(t, t.TempDir(), spool.Options{Forwarding: true})
	recv.SetMode(forwardrecv.WithholdAck)
	sh := startShipper(t, s, fastForward(recv.Addr()))
	const n = 500
	for i := range n {
		if err := s.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
	}
	testutil.WaitFor(t, "a withheld ack to time out", func() bool { return promtest.ToFloat64(sh.metrics.retries) >= 2 })
	if s.Acked() != (spool.Pos{}) {
		t.Fatalf("acked %v without any ack", s.Acked())
	}
	if lag := sh.ShipLag(); lag <= 0 {
		t.Errorf("ship lag %v while nothing is acknowledged", lag)
	}
	recv.SetMode(forwardrecv.DropConn)
	time.Sleep(100 * time.Millisecond)
	recv.SetMode(forwardrecv.Ack)
	testutil.WaitFor(t, "all acknowledged", func() bool { c, _ := s.Committed(); return s.Acked() == c })
	seen := map[string]int{}
	for _, id := range recordIDs(recv.Entries()) {
		seen[id]++
	}
	for i := range n {
		if seen[fmt.Sprintf("ev-%06d", i)] == 0 {
			t.Fatalf("event %d never arrived", i)
		}
	}
	if len(seen) != n {
		t.Errorf("%d distinct ids, want %d", len(seen), n)
	}
	if got := promtest.ToFloat64(sh.metrics.reconnects); got < 1 {
		t.Errorf("reconnects %v", got)
	}
	if sh.ShipLag() != 0 {
		t.Errorf("ship lag %v after all acked", sh.ShipLag())
	}
}

// TestAggregatorDownAtStartAndRestarted: events recorded while no
// aggregator listens arrive once one does, and those after a restart too.
func TestAggregatorDownAtStartAndRestarted(t *testing.T) {
	// Reserve an address with nothing on it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := openTestSpool(t, t.TempDir(), spool.Options{Forwarding: true})
	sh := startShipper(t, s, fastForward(addr))
	for i := range 100 {
		s.Append(testutil.Event(i))
	}
	testutil.WaitFor(t, "connection attempts", func() bool { return promtest.ToFloat64(sh.metrics.retries) >= 3 })
	recv := testutil.StartReceiver(t, addr, forwardrecv.Config{})
	if !recv.WaitFor(100, 5*time.Second) {
		t.Fatalf("%d of 100 events after the aggregator came up", recv.Len())
	}
	recv.Close()
	for i := 100; i < 200; i++ {
		s.Append(testutil.Event(i))
	}
	recv2 := testutil.StartReceiver(t, addr, forwardrecv.Config{})
	testutil.WaitFor(t, "all acknowledged", func() bool { c, _ := s.Committed(); return s.Acked() == c })
	ids := map[string]bool{}
	for _, e := range append(recv.Entries(), recv2.Entries()...) {
		ids[e.Record["id"].(string)] = true
	}
	if len(ids) != 200 {
		t.Errorf("%d of 200 distinct events arrived", len(ids))
	}
}

func TestShippingOverTLS(t *testing.T) {
	serverTLS, roots, err := forwardrecv.SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	recv := testutil.StartReceiver(t, "127.0.0.1:0", forwardrecv.Config{TLS: serverTLS})
	for _, tc := range []struct {
		name      string
		mod       func(*Options)
		wantShips bool
	}{
		{"verified", func(o *Options) { o.RootCAs = roots }, true},
		{"unknown CA refused", func(o *Options) {}, false},
		{"unknown CA with explicit skip", func(o *Options) { o.InsecureSkipVerify = true }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTestSpool(t, t.TempDir(), spool.Options{Forwarding: true})
			opts := fastForward(recv.Addr())
			opts.Address = "tls://" + recv.Addr()
			tc.mod(&opts)
			sh := startShipper(t, s, opts)
			before := recv.Len()
			s.Append(testutil.Event(1))
			if !tc.wantShips {
				testutil.WaitFor(t, "failed handshakes", func() bool { return promtest.ToFloat64(sh.metrics.retries) >= 2 })
				if recv.Len() != before || s.Acked() != (spool.Pos{}) {
					t.Error("shipped to a server with an unverified certificate")
				}
				return
			}
			testutil.WaitFor(t, "acknowledged over TLS", func() bool { c, _ := s.Committed(); return s.Acked() == c })
		})
	}
}

// TestDrainNeverHangs: a receiver that never acks holds Drain only for its
// timeout; one that acks lets it finish with everything shipped.
func TestDrainNeverHangs(t *testing.T) {
	recv := testutil.StartReceiver(t, "127.0.0.1:0", forwardrecv.Config{})
	recv.SetMode(forwardrecv.WithholdAck)
	dir := t.TempDir()
	s := openTestSpool(t, dir, spool.Options{Forwarding: true})
	opts := fastForward(recv.Addr())
	opts.AckTimeout = time.Hour // the drain timeout must win
	sh, err := New(s, opts)
	if err != nil {
		t.Fatal(err)
	}
	sh.Start()
	for i := range 10 {
		s.Append(testutil.Event(i))
	}
	s.Close()
	start := time.Now()
	if sh.Drain(200 * time.Millisecond) {
		t.Error("Drain reported success without acks")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Drain took %v with a 200ms timeout", d)
	}
	// The next run ships what is left.
	recv.SetMode(forwardrecv.Ack)
	s2 := openTestSpool(t, dir, spool.Options{Forwarding: true})
	sh2, _ := New(s2, fastForward(recv.Addr()))
	sh2.Start()
	s2.Close()
	if !sh2.Drain(5 * time.Second) {
		t.Fatal("second run did not drain")
	}
	c, _ := s2.Committed()
	if a := openTestSpool(t, dir, spool.Options{}).Acked(); a != c {
		t.Errorf("the spool opened again has acked %v, committed %v", a, c)
	}
}

func TestParseForwardAddress(t *testing.T) {
	for _, tc := range []struct {
		in      string
		tls     bool
		host    string
		wantErr string
	}{
		{"tcp://127.0.0.1:24224", false, "127.0.0.1:24224", ""},
		{"tls://agg.example.com:24224", true, "agg.example.com:24224", ""},
		{"tls://[::1]:24224", true, "[::1]:24224", ""},
		{"http://x:1", false, "", "scheme must be tcp or tls"},
		{"tcp://x", false, "", "want tcp://HOST:PORT"},
		{"x:24224", false, "", "scheme must be tcp or tls"},
		{"tcp://x:1/path", false, "", "want tcp://HOST:PORT"},
	} {
		useTLS, host, err := ParseAddress(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || useTLS != tc.tls || host != tc.host {
			t.Errorf("%q = %v %q %v", tc.in, useTLS, host, err)
		}
	}
}

func TestMetricsPassPromlint(t *testing.T) {
	s := openTestSpool(t, t.TempDir(), spool.Options{Forwarding: true})
	sh, err := New(s, fastForward("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if err := s.Register(reg); err != nil {
		t.Fatal(err)
	}
	if err := sh.Register(reg); err != nil {
		t.Fatal(err)
	}
	problems, err := promtest.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	if n, _ := promtest.GatherAndCount(reg); n < 15 {
		t.Errorf("%d metrics registered", n)
	}
}

func openTestSpool(t *testing.T, dir string, opts spool.Options) *spool.Spool {
	t.Helper()
	s, err := spool.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// segmentFiles returns the spool's segment files under dataDir, oldest
// first (their names are their ids, zero-padded).
func segmentFiles(t *testing.T, dataDir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dataDir, spool.DirName, "*.seg*"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

// eventIDsIn returns the ids of the test events (testutil.Event) whose
// bytes a segment file holds, decompressing a sealed one.
func eventIDsIn(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(path, ".zst") {
		d, _ := zstd.NewReader(nil)
		defer d.Close()
		if b, err = d.DecodeAll(b, nil); err != nil {
			t.Fatal(err)
		}
	}
	ids := map[string]bool{}
	for _, m := range regexp.MustCompile(`"id":"(ev-\d{6})"`).FindAllSubmatch(b, -1) {
		ids[string(m[1])] = true
	}
	return ids
}

// TestDamagedSegmentIsShippedPast: a damaged segment the spool is done with
// does not stop shipping. Every event of the other segments arrives, and so
// does the segment_damaged event the spool records for it; the ship lag
// returns to 0. (spool's TestDamagedSegmentIsQuarantinedAndReadPast checks
// what the quarantine keeps and says.)
func TestDamagedSegmentIsShippedPast(t *testing.T) {
	dir := t.TempDir()
	s := openTestSpool(t, dir, spool.Options{Forwarding: true, SegmentMaxBytes: 4 << 10})
	const n = 120
	for i := range n {
		if err := s.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	segs := segmentFiles(t, dir)
	if len(segs) < 4 {
		t.Fatalf("%d segments, want 4 or more", len(segs))
	}
	damaged := segs[1]
	inDamaged := eventIDsIn(t, damaged)
	if len(inDamaged) == 0 {
		t.Fatalf("no event in %s", damaged)
	}
	b, _ := os.ReadFile(damaged)
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(damaged, b, 0o600); err != nil {
		t.Fatal(err)
	}

	recv := testutil.StartReceiver(t, "127.0.0.1:0", forwardrecv.Config{})
	sh := startShipper(t, openTestSpool(t, dir, spool.Options{Forwarding: true, SegmentMaxBytes: 4 << 10}), fastForward(recv.Addr()))
	testutil.WaitFor(t, "every event of the intact segments and a segment_damaged event at the aggregator", func() bool {
		got := map[string]bool{}
		damagedEvent := false
		for _, e := range recv.Entries() {
			got[fmt.Sprint(e.Record["id"])] = true
			damagedEvent = damagedEvent || e.Record["type"] == audit.TypeSegmentDamaged
		}
		for i := range n {
			if id := fmt.Sprintf("ev-%06d", i); !inDamaged[id] && !got[id] {
				return false
			}
		}
		return damagedEvent
	})
	testutil.WaitFor(t, "ship lag back to 0", func() bool { return sh.ShipLag() == 0 })
}

// TestShipLagWhileStuck: while shipping cannot read on (here: damage in the
// active segment, which only the next start repairs), the ship lag grows
// instead of reading 0.
func TestShipLagWhileStuck(t *testing.T) {
	recv := testutil.StartReceiver(t, "127.0.0.1:0", forwardrecv.Config{})
	dir := t.TempDir()
	s := openTestSpool(t, dir, spool.Options{Forwarding: true})
	for i := range 5 {
		if err := s.Append(testutil.Event(i)); err != nil {
			t.Fatal(err)
		}
	}
	// The disk damages a committed record before it is shipped.
	segs := segmentFiles(t, dir)
	b, err := os.ReadFile(segs[len(segs)-1])
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(b, []byte("ev-000000"))
	if at < 0 {
		t.Fatal("the first event is not in the active segment")
	}
	f, err := os.OpenFile(segs[len(segs)-1], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("XXXX"), int64(at))
	f.Close()
	sh := startShipper(t, s, fastForward(recv.Addr()))
	testutil.WaitFor(t, "a lag of 100 ms", func() bool { return sh.ShipLag() >= 100*time.Millisecond })
	if got := testutil.MetricValue(t, sh.Register, "auditproxy_forward_ship_lag_seconds"); got < 0.1 {
		t.Errorf("auditproxy_forward_ship_lag_seconds = %v while stuck", got)
	}
}

// TestLowRateEventsShareMessages: events committed one at a time, a
// millisecond apart (a sidecar at ~1,000 req/s with sync durability), go
// out in messages of several events, not one message and one ack each, and
// arrive within a linger or so of the last commit. With no linger the same
// run sends about one message per event.
func TestLowRateEventsShareMessages(t *testing.T) {
	for _, linger := range []time.Duration{20 * time.Millisecond, -1} {
		recv := testutil.StartReceiver(t, "127.0.0.1:0", forwardrecv.Config{})
		s := openTestSpool(t, t.TempDir(), spool.Options{Forwarding: true})
		opts := fastForward(recv.Addr())
		opts.BatchLinger = linger
		startShipper(t, s, opts)
		const n = 60
		want := make([]string, n)
		var last time.Time
		for i := range want {
			want[i] = fmt.Sprintf("e%d", i)
			if err := s.Append(fmt.Appendf(nil, `{"v":1,"id":%q}`, want[i])); err != nil {
				t.Fatal(err)
			}
			last = time.Now()
			time.Sleep(time.Millisecond)
		}
		if !recv.WaitFor(n, 5*time.Second) {
			t.Fatalf("linger %v: %d of %d events shipped", linger, recv.Len(), n)
		}
		took, msgs := time.Since(last), recv.Stats().Messages
		t.Logf("linger %v: %d events in %d messages, the last arrived %v after its commit", linger, n, msgs, took)
		if !slices.Equal(recordIDs(recv.Entries()), want) {
			t.Errorf("linger %v: events out of order or missing: %v", linger, recordIDs(recv.Entries()))
		}
		if linger > 0 && msgs > n/3 {
			t.Errorf("linger %v: %d events went out in %d messages; at low rates they should share them", linger, n, msgs)
		}
		if took > time.Second {
			t.Errorf("linger %v: the last event took %v to arrive", linger, took)
		}
	}
}
