package change

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/internal/testutil"
)

// TestHandlerRefuses: each bad submission gets its status and an
// OpenAI-style error saying what is wrong, and nothing is recorded.
func TestHandlerRefuses(t *testing.T) {
	sarah := testutil.NewSSHKey(t, "sarah")
	allowed, err := ParseAllowedSigners("allowed", []byte("sarah@example.com "+sarah.Public+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 5, 14, 30, 0, 0, time.UTC)
	var recorded int
	failing := false
	h := Handler(HandlerOptions{Token: strings.Repeat("t", 64), Allowed: allowed, RequireSigned: true, Now: func() time.Time { return now },
		Record: func([]byte) error {
			if failing {
				return errors.New("spool full")
			}
			recorded++
			return nil
		}})
	rec := testRecord("sarah@example.com", "")
	rec.Type = "incident_action"
	signedBody := func(r *Record) string {
		canon := canonical(t, r)
		b, _ := json.Marshal(Submission{Record: canon, Signatures: []string{sarah.Sign(t, canon, Namespace)}})
		return string(b)
	}
	good := signedBody(rec)
	old := *rec
	old.Created = now.Add(-8 * 24 * time.Hour).Format(time.RFC3339)
	ahead := *rec
	ahead.Created = now.Add(time.Hour).Format(time.RFC3339)
	for _, tc := range []struct {
		name, method, token, body string
		fail                      bool
		code                      int
		want                      string
	}{
		{"no token", "POST", "", good, false, 401, "bearer token"},
		{"a wrong token", "POST", strings.Repeat("x", 64), good, false, 401, "bearer token"},
		{"GET", "GET", "t", "", false, 405, "use POST"},
		{"not JSON", "POST", "t", "{", false, 400, "not a JSON object"},
		{"too large", "POST", "t", `{"record":"` + strings.Repeat("x", MaxRecordSize+64<<10) + `"}`, false, 413, "larger than"},
		{"unsigned, signatures required", "POST", "t", `{"type":"x","actor":"a","justification":"j"}`, false, 403, "takes only signed change records"},
		{"an unknown member", "POST", "t", `{"record":{},"signatures":[],"extra":1}`, false, 400, "unknown field"},
		{"no signature", "POST", "t", `{"record":` + string(canonical(t, rec)) + `}`, false, 400, "no signature"},
		{"prepared 8 days ago", "POST", "t", signedBody(&old), false, 400, "more than 168h0m0s ago"},
		{"dated ahead", "POST", "t", signedBody(&ahead), false, 400, "ahead of this sidecar's clock"},
		{"the log cannot take it", "POST", "t", good, true, 503, "spool full"},
		{"accepted", "POST", "t", good, false, 201, `"id":`},
		{"replayed", "POST", "t", good, false, 409, "was recorded already"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := recorded
			failing = tc.fail
			r := httptest.NewRequest(tc.method, AnnotationPath, strings.NewReader(tc.body))
			if tc.token != "" {
				tok := tc.token
				if tok == "t" {
					tok = strings.Repeat("t", 64)
				}
				r.Header.Set("Authorization", "Bearer "+tok)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			body, _ := io.ReadAll(w.Body)
			if w.Code != tc.code || !strings.Contains(string(body), tc.want) {
				t.Errorf("%d %s, want %d and %q", w.Code, body, tc.code, tc.want)
			}
			if tc.code != http.StatusCreated && !strings.Contains(string(body), `{"error":{"message":`) {
				t.Errorf("not an OpenAI-style error: %s", body)
			}
			if wantRecorded := tc.code == http.StatusCreated; (recorded > before) != wantRecorded {
				t.Errorf("recorded %d events", recorded-before)
			}
		})
	}
}
