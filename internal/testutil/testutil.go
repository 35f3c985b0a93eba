// Package testutil holds the set-up that tests of several packages share:
// a checkpoint signing key, a spool event, a forward-protocol receiver, a
// metric's value, and waiting for a condition. Only tests import it.
package testutil

import (
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"

	"github.com/auditproxy/auditproxy/bench/forwardrecv"
)

// Signer returns a new Ed25519 note key named name: the signer, and the
// verifiers of its signatures.
func Signer(tb testing.TB, name string) (note.Signer, note.Verifiers) {
	tb.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		tb.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		tb.Fatal(err)
	}
	return s, note.VerifierList(v)
}

// Event returns the i-th of a series of small, distinct inference events
// (ids ev-000000, ev-000001, …), of varying length.
func Event(i int) []byte {
	return fmt.Appendf(nil, `{"v":1,"type":"inference","id":"ev-%06d","time":"2026-11-23T10:00:00.%09dZ","request_id":"%s","status":{"code":200,"outcome":"ok"}}`,
		i, i, strings.Repeat("r", i%40+1))
}

// WaitFor polls cond every 5 ms for up to 5 s, and fails the test, naming
// what it waited for, if cond never holds.
func WaitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// MetricValue registers metrics with register in a new registry and returns
// the value of the gauge or counter name (its first series).
func MetricValue(tb testing.TB, register func(prometheus.Registerer) error, name string) float64 {
	tb.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := register(reg); err != nil {
		tb.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	tb.Fatalf("no metric %s", name)
	return 0
}

// StartReceiver starts an independent forward-protocol receiver (the
// aggregator of the tests) on addr, closed when the test ends.
func StartReceiver(tb testing.TB, addr string, cfg forwardrecv.Config) *forwardrecv.Receiver {
	tb.Helper()
	r, err := forwardrecv.Start(addr, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close() })
	return r
}
