package auditlog

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/audit"
)

// TestParseSignedCheckpoint: a checkpoint event reads back as the
// checkpoint the log handed on; anything else is refused with a reason.
func TestParseSignedCheckpoint(t *testing.T) {
	signer, keys := newTestKeys(t, "test-node")
	c, err := NewChain(ChainState{Origin: "test-node/20261123T100000Z"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := c.Append(nil, inferenceJSON(i, t0)); err != nil {
			t.Fatal(err)
		}
	}
	event, want, err := c.appendCheckpointEvent(nil, signer, t0, 10*time.Second, false, nil, audit.Source{Host: "h"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseSignedCheckpoint(event)
	if err != nil {
		t.Fatal(err)
	}
	if got.Checkpoint != want.Checkpoint || !bytes.Equal(got.Note, want.Note) || !bytes.Equal(got.Event, event) || !bytes.Equal(want.Event, event) {
		t.Errorf("read back %+v, handed on %+v", got, want)
	}
	if _, _, err := OpenCheckpoint(got.Note, keys); err != nil {
		t.Errorf("the note does not open with the log's key: %v", err)
	}

	otherNote := strings.Replace(string(event), `"size":3`, `"size":2`, 1)
	for _, tc := range []struct{ name, event, want string }{
		{"not JSON", `not json`, "checkpoint event"},
		{"another type", `{"type":"inference"}`, `of type "inference" without a checkpoint note`},
		{"no note", `{"type":"checkpoint","checkpoint":{"origin":"o","size":1}}`, "without a checkpoint note"},
		{"a note that is not one", `{"type":"checkpoint","checkpoint":{"origin":"o","size":1,"note":"hello"}}`, "checkpoint note"},
		{"a record that is not its note's", otherNote, "differs from its note"},
	} {
		if _, err := ParseSignedCheckpoint([]byte(tc.event)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}
