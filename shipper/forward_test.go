package shipper

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/auditproxy/auditproxy/bench/forwardrecv"
)

func startReceiver(t *testing.T, addr string, cfg forwardrecv.Config) *forwardrecv.Receiver {
	t.Helper()
	r, err := forwardrecv.Start(addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func fastForward(addr string) ForwardOptions {
	return ForwardOptions{Address: "tcp://" + addr, AckTimeout: 300 * time.Millisecond,
		BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond, StateInterval: 10 * time.Millisecond}
}

func startShipper(t *testing.T, s *Spool, opts ForwardOptions) *Shipper {
	t.Helper()
	sh, err := NewShipper(s, opts)
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
	recv := startReceiver(t, "127.0.0.1:0", forwardrecv.Config{})
	s := openTestSpool(t, t.TempDir(), SpoolOptions{Forwarding: true})
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
	waitFor(t, "ack recorded", func() bool { c, _ := s.Committed(); return s.Acked() == c })
	if got := testutil.ToFloat64(sh.metrics.acked); got != 2 {
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
	recv := startReceiver(t, "127.0.0.1:0", forwardrecv.Config{})
	s := openTestSpool(t, t.TempDir(), SpoolOptions{Forwarding: true})
	recv.SetMode(forwardrecv.WithholdAck)
	sh := startShipper(t, s, fastForward(recv.Addr()))
	const n = 500
	for i := range n {
		if err := s.Append(testEvent(i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "a withheld ack to time out", func() bool { return testutil.ToFloat64(sh.metrics.retries) >= 2 })
	if s.Acked() != (Pos{}) {
		t.Fatalf("acked %v without any ack", s.Acked())
	}
	if lag := sh.ShipLag(); lag <= 0 {
		t.Errorf("ship lag %v while nothing is acknowledged", lag)
	}
	recv.SetMode(forwardrecv.DropConn)
	time.Sleep(100 * time.Millisecond)
	recv.SetMode(forwardrecv.Ack)
	waitFor(t, "all acknowledged", func() bool { c, _ := s.Committed(); return s.Acked() == c })
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
	if got := testutil.ToFloat64(sh.metrics.reconnects); got < 1 {
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
	s := openTestSpool(t, t.TempDir(), SpoolOptions{Forwarding: true})
	sh := startShipper(t, s, fastForward(addr))
	for i := range 100 {
		s.Append(testEvent(i))
	}
	waitFor(t, "connection attempts", func() bool { return testutil.ToFloat64(sh.metrics.retries) >= 3 })
	recv := startReceiver(t, addr, forwardrecv.Config{})
	if !recv.WaitFor(100, 5*time.Second) {
		t.Fatalf("%d of 100 events after the aggregator came up", recv.Len())
	}
	recv.Close()
	for i := 100; i < 200; i++ {
		s.Append(testEvent(i))
	}
	recv2 := startReceiver(t, addr, forwardrecv.Config{})
	waitFor(t, "all acknowledged", func() bool { c, _ := s.Committed(); return s.Acked() == c })
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
	recv := startReceiver(t, "127.0.0.1:0", forwardrecv.Config{TLS: serverTLS})
	for _, tc := range []struct {
		name      string
		mod       func(*ForwardOptions)
		wantShips bool
	}{
		{"verified", func(o *ForwardOptions) { o.RootCAs = roots }, true},
		{"unknown CA refused", func(o *ForwardOptions) {}, false},
		{"unknown CA with explicit skip", func(o *ForwardOptions) { o.InsecureSkipVerify = true }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTestSpool(t, t.TempDir(), SpoolOptions{Forwarding: true})
			opts := fastForward(recv.Addr())
			opts.Address = "tls://" + recv.Addr()
			tc.mod(&opts)
			sh := startShipper(t, s, opts)
			before := recv.Len()
			s.Append(testEvent(1))
			if !tc.wantShips {
				waitFor(t, "failed handshakes", func() bool { return testutil.ToFloat64(sh.metrics.retries) >= 2 })
				if recv.Len() != before || s.Acked() != (Pos{}) {
					t.Error("shipped to a server with an unverified certificate")
				}
				return
			}
			waitFor(t, "acknowledged over TLS", func() bool { c, _ := s.Committed(); return s.Acked() == c })
		})
	}
}

// TestDrainNeverHangs: a receiver that never acks holds Drain only for its
// timeout; one that acks lets it finish with everything shipped.
func TestDrainNeverHangs(t *testing.T) {
	recv := startReceiver(t, "127.0.0.1:0", forwardrecv.Config{})
	recv.SetMode(forwardrecv.WithholdAck)
	dir := t.TempDir()
	s := openTestSpool(t, dir, SpoolOptions{Forwarding: true})
	opts := fastForward(recv.Addr())
	opts.AckTimeout = time.Hour // the drain timeout must win
	sh, err := NewShipper(s, opts)
	if err != nil {
		t.Fatal(err)
	}
	sh.Start()
	for i := range 10 {
		s.Append(testEvent(i))
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
	s2 := openTestSpool(t, dir, SpoolOptions{Forwarding: true})
	sh2, _ := NewShipper(s2, fastForward(recv.Addr()))
	sh2.Start()
	s2.Close()
	if !sh2.Drain(5 * time.Second) {
		t.Fatal("second run did not drain")
	}
	st, _ := loadState(s2.dir)
	if c, _ := s2.Committed(); st.Acked != c {
		t.Errorf("state acked %v, committed %v", st.Acked, c)
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
		useTLS, host, err := ParseForwardAddress(tc.in)
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
	s := openTestSpool(t, t.TempDir(), SpoolOptions{Forwarding: true})
	sh, err := NewShipper(s, fastForward("127.0.0.1:1"))
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
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	if n, _ := testutil.GatherAndCount(reg); n < 15 {
		t.Errorf("%d metrics registered", n)
	}
}
