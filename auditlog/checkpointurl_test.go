package auditlog

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestCheckpointPosterDeliversInOrderThroughFailures(t *testing.T) {
	var mu sync.Mutex
	var got []string
	fail := 3
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if r.Header.Get("Content-Type") != "application/json" || r.Method != http.MethodPost {
			t.Errorf("%s with %q", r.Method, r.Header.Get("Content-Type"))
		}
		if fail > 0 {
			fail--
			http.Error(w, "not now", http.StatusServiceUnavailable)
			return
		}
		got = append(got, string(b))
	}))
	defer srv.Close()
	p, err := NewCheckpointPoster(srv.URL+"/checkpoints", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		p.Write(SignedCheckpoint{Event: []byte(`{"n":` + string(rune('0'+i)) + `}`)})
	}
	if err := p.Close(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(got, ",") != `{"n":0},{"n":1},{"n":2},{"n":3},{"n":4}` {
		t.Errorf("posted %v", got)
	}
}

func TestCheckpointPosterNeverBlocksAndCloseIsBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusBadGateway)
	}))
	defer srv.Close()
	p, _ := NewCheckpointPoster(srv.URL, nil)
	start := time.Now()
	for range 1000 {
		p.Write(SignedCheckpoint{Event: []byte(`{}`)})
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("1000 writes took %v", d)
	}
	if p.Dropped() == 0 {
		t.Error("nothing dropped with the endpoint down and 1000 queued")
	}
	start = time.Now()
	if err := p.Close(200 * time.Millisecond); err == nil {
		t.Error("Close reported success with the endpoint down")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %v", d)
	}
	if _, err := NewCheckpointPoster("ftp://x", nil); err == nil {
		t.Error("an ftp URL was accepted")
	}
}
