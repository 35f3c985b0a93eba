package auditlog

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Checkpoint is a log's size and root hash, the body of a C2SP
// tlog-checkpoint:
//
//	<origin>\n
//	<size, decimal>\n
//	<root hash, standard base64>\n
//
// It is signed as a signed note (golang.org/x/mod/sumdb/note, Ed25519).
//
// The checkpoint a sidecar writes as it stops has one extension line,
//
//	final\n
//
// Final says the log was closed at this size: events after it in the log
// are valid only after a restart (proxy_started). C2SP discourages
// extension lines because monitors cannot audit them; this one is there
// because the claim must be signed with the tree it closes. Outside the
// note (a member of the checkpoint event), nothing would sign it for the
// newest checkpoint: a copy rolled back to any checkpoint could claim a
// stop there (and the downtime after it), and one with events appended
// after a stop could drop the claim. Witnesses cosign the whole note
// (cosignature/v1) but vouch only for its first three lines.
type Checkpoint struct {
	Origin string
	Size   int64
	Root   tlog.Hash
	Final  bool
}

// finalExtension is the extension line of a final checkpoint.
const finalExtension = "final\n"

// Text returns the checkpoint's note text.
func (c Checkpoint) Text() string {
	text := c.Origin + "\n" + strconv.FormatInt(c.Size, 10) + "\n" + base64.StdEncoding.EncodeToString(c.Root[:]) + "\n"
	if c.Final {
		text += finalExtension
	}
	return text
}

// ParseCheckpoint parses a checkpoint's note text. Extension lines after the
// root must be non-empty lines, as C2SP tlog-checkpoint says; "final" sets
// Final and others are ignored.
func ParseCheckpoint(text string) (Checkpoint, error) {
	var c Checkpoint
	lines := strings.SplitAfterN(text, "\n", 4)
	if len(lines) < 3 || !strings.HasSuffix(lines[2], "\n") {
		return c, errors.New("checkpoint: want origin, size and root hash lines")
	}
	c.Origin = strings.TrimSuffix(lines[0], "\n")
	if c.Origin == "" {
		return c, errors.New("checkpoint: empty origin")
	}
	sizeText := strings.TrimSuffix(lines[1], "\n")
	size, err := strconv.ParseInt(sizeText, 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != sizeText {
		return c, fmt.Errorf("checkpoint: size %q is not a non-negative decimal number", sizeText)
	}
	c.Size = size
	root, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(lines[2], "\n"))
	if err != nil || len(root) != tlog.HashSize {
		return c, fmt.Errorf("checkpoint: root hash %q is not %d bytes of base64", strings.TrimSuffix(lines[2], "\n"), tlog.HashSize)
	}
	copy(c.Root[:], root)
	if len(lines) == 4 {
		for ext := range strings.SplitAfterSeq(lines[3], "\n") {
			switch {
			case ext == "":
			case ext == "\n" || !strings.HasSuffix(ext, "\n"):
				return c, fmt.Errorf("checkpoint: extension line %q is empty or has no newline", ext)
			case ext == finalExtension:
				c.Final = true
			}
		}
	}
	return c, nil
}

// SignCheckpoint returns the signed note of c.
func SignCheckpoint(c Checkpoint, s note.Signer) ([]byte, error) {
	return note.Sign(&note.Note{Text: c.Text()}, s)
}

// OpenCheckpoint verifies a signed checkpoint note against known keys and
// parses it. A note signed by no known key fails with
// *note.UnverifiedNoteError.
func OpenCheckpoint(msg []byte, known note.Verifiers) (Checkpoint, *note.Note, error) {
	n, err := note.Open(msg, known)
	if err != nil {
		return Checkpoint{}, n, err
	}
	c, err := ParseCheckpoint(n.Text)
	return c, n, err
}

// CheckpointRecord is the "checkpoint" member of a checkpoint event. Origin,
// Size and Root repeat the signed note's body for readers; the note is what
// counts. IntervalMS is the sidecar's checkpoint interval: a verifier flags
// longer gaps between checkpoints. Final repeats the note's final extension
// line (Checkpoint.Final): the checkpoint a sidecar writes as it stops, so
// the gap after it is downtime, not missing checkpoints.
//
// Outage is set on the first checkpoint committed after the log could not
// commit for a while (a full or failing disk): checkpoints due meanwhile
// were attempted and failed, so the gap before this one is an outage that
// the sidecar reports, not checkpoints removed from the log. It is covered
// by the next checkpoint's root, not by its own note.
type CheckpointRecord struct {
	Origin     string            `json:"origin"`
	Size       int64             `json:"size"`
	Root       string            `json:"root"`
	Note       string            `json:"note"`
	IntervalMS int64             `json:"interval_ms"`
	Final      bool              `json:"final,omitempty"`
	Outage     *CheckpointOutage `json:"outage,omitempty"`
}

// CheckpointOutage says why and since when a log could not commit before
// the checkpoint that carries it.
type CheckpointOutage struct {
	// Since is the time of the first failed commit.
	Since audit.Timestamp `json:"since"`
	// Reason is the spool's state: commit_failed (a write or fsync failed)
	// or unusable (a failed commit could not be cut off the segment).
	Reason string `json:"reason"`
	// Error is the first failure's error.
	Error string `json:"error"`
	// FailedCommits counts the commits that failed, FailedCheckpoints those
	// of them that held a checkpoint.
	FailedCommits     int `json:"failed_commits"`
	FailedCheckpoints int `json:"failed_checkpoints"`
}

// checkpointEvent is the wire form of a checkpoint event (the chain adds its
// "log" member):
//
//	{"v":1,"type":"checkpoint","id":"<uuid>","time":"…","checkpoint":{…},"source":{…}}
//
// It is the log's next leaf: the checkpoint with size N is itself event N,
// so checkpoints are chained like any event and one cannot be removed
// unnoticed.
type checkpointEvent struct {
	V          int              `json:"v"`
	Type       string           `json:"type"`
	ID         string           `json:"id"`
	Time       audit.Timestamp  `json:"time"`
	Checkpoint CheckpointRecord `json:"checkpoint"`
	Source     audit.Source     `json:"source"`
}

// AppendCheckpointEvent signs a checkpoint of the chain's current tree and
// appends it to dst as the chain's next event.
func (c *Chain) AppendCheckpointEvent(dst []byte, s note.Signer, now time.Time, interval time.Duration, final bool, src audit.Source) ([]byte, error) {
	return c.AppendCheckpointEventAfter(dst, s, now, interval, final, nil, src)
}

// AppendCheckpointEventAfter is AppendCheckpointEvent for the first
// checkpoint after an outage, which it reports (nil: none).
func (c *Chain) AppendCheckpointEventAfter(dst []byte, s note.Signer, now time.Time, interval time.Duration, final bool, outage *CheckpointOutage, src audit.Source) ([]byte, error) {
	dst, _, err := c.appendCheckpointEvent(dst, s, now, interval, final, outage, src)
	return dst, err
}

// appendCheckpointEvent is AppendCheckpointEventAfter; it also returns the
// checkpoint appended, signed, its Event the bytes appended.
func (c *Chain) appendCheckpointEvent(dst []byte, s note.Signer, now time.Time, interval time.Duration, final bool, outage *CheckpointOutage, src audit.Source) ([]byte, SignedCheckpoint, error) {
	cp := Checkpoint{Origin: c.origin, Size: c.tree.n, Root: c.tree.Root(), Final: final}
	signed, err := SignCheckpoint(cp, s)
	if err != nil {
		return dst, SignedCheckpoint{}, fmt.Errorf("sign checkpoint: %w", err)
	}
	ev := checkpointEvent{V: 1, Type: audit.TypeCheckpoint, ID: audit.NewID(), Time: audit.Timestamp(now),
		Checkpoint: CheckpointRecord{Origin: cp.Origin, Size: cp.Size, Root: base64.StdEncoding.EncodeToString(cp.Root[:]),
			Note: string(signed), IntervalMS: interval.Milliseconds(), Final: final, Outage: outage},
		Source: src}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(ev); err != nil {
		return dst, SignedCheckpoint{}, err
	}
	start := len(dst)
	dst, err = c.Append(dst, bytes.TrimSuffix(buf.Bytes(), []byte("\n")))
	if err != nil {
		return dst, SignedCheckpoint{}, err
	}
	return dst, SignedCheckpoint{Checkpoint: cp, Note: signed, Event: bytes.Clone(dst[start:])}, nil
}

// A SignedCheckpoint is a checkpoint the log committed, as it hands it on
// (Options.OnCheckpoint) to those who keep or submit it: the checkpoint
// directory, the checkpoint URL, the witness.
type SignedCheckpoint struct {
	Checkpoint
	// Note is the signed note: the checkpoint's text and the log's
	// signature (SignCheckpoint).
	Note []byte
	// Event is the checkpoint event as committed: its canonical JSON, one
	// line without the newline.
	Event []byte
}

// ParseSignedCheckpoint reads a checkpoint event (one committed by a Log,
// read back from a file or an aggregator). The note's signature is not
// checked (OpenCheckpoint does that, given the keys); its form is, and its
// text must be the checkpoint the event's record names.
func ParseSignedCheckpoint(event []byte) (SignedCheckpoint, error) {
	var e struct {
		Type       string `json:"type"`
		Checkpoint struct {
			Origin string `json:"origin"`
			Size   int64  `json:"size"`
			Note   string `json:"note"`
		} `json:"checkpoint"`
	}
	if err := json.Unmarshal(event, &e); err != nil {
		return SignedCheckpoint{}, fmt.Errorf("checkpoint event: %w", err)
	}
	if e.Type != audit.TypeCheckpoint || e.Checkpoint.Note == "" {
		return SignedCheckpoint{}, fmt.Errorf("event of type %q without a checkpoint note", e.Type)
	}
	msg := []byte(e.Checkpoint.Note)
	_, err := note.Open(msg, nil)
	var unverified *note.UnverifiedNoteError
	if !errors.As(err, &unverified) {
		return SignedCheckpoint{}, fmt.Errorf("checkpoint note: %v", err)
	}
	cp, err := ParseCheckpoint(unverified.Note.Text)
	if err != nil {
		return SignedCheckpoint{}, err
	}
	if cp.Origin != e.Checkpoint.Origin || cp.Size != e.Checkpoint.Size {
		return SignedCheckpoint{}, fmt.Errorf("checkpoint record (%s, %d) differs from its note (%s, %d)",
			e.Checkpoint.Origin, e.Checkpoint.Size, cp.Origin, cp.Size)
	}
	return SignedCheckpoint{Checkpoint: cp, Note: msg, Event: bytes.Clone(event)}, nil
}
