package auditlog

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/internal/fsutil"
)

// PendingEpochFile records a new log epoch that a start decided on, and why,
// until the epoch's first event (log_started, which says the same) is
// committed. It is written (atomically, fsynced) before anything that
// destroys the evidence of the reason: a segment rewritten without its
// damage, a state file that no longer says how much was committed, a tree
// state reset for the new epoch. A crash before log_started commits would
// otherwise leave a spool that looks whole, or whose tree state belongs to
// an epoch without events, and the next start would continue the old log
// without a word about what was lost (or rebuild its tree, blaming that
// instead). The next start reads it, starts the epoch again with the same
// reason and what it recorded as lost (adding what it finds itself), and
// the file is removed once log_started is committed. A file whose epoch has
// events in the spool was left by a crash just after that commit: it is
// removed without effect.
//
// Its name ends in neither .json nor a segment's extension, so that verify
// and query, reading a spool directory, do not take it for events.
const PendingEpochFile = "log.pending"

// PendingEpoch is the content of PendingEpochFile.
type PendingEpoch struct {
	// Origin is the new epoch's origin once chosen; "" while the start that
	// wrote the file was still repairing the spool.
	Origin string `json:"origin,omitempty"`
	// Reason is the new epoch's reason when it is not a loss (which Lost
	// and CommittedLost say, and the reason is made from).
	Reason        string            `json:"reason,omitempty"`
	Lost          []audit.LostRange `json:"lost,omitempty"`
	CommittedLost string            `json:"committed_lost,omitempty"`
}

// LoadPendingEpoch reads dir's pending epoch file: nil when there is none.
func LoadPendingEpoch(dir string) (*PendingEpoch, error) {
	b, err := os.ReadFile(filepath.Join(dir, PendingEpochFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var p PendingEpoch
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%s is not a pending log epoch (%v)", PendingEpochFile, err)
	}
	return &p, nil
}

// SavePendingEpoch replaces dir's pending epoch file with p, durably.
func SavePendingEpoch(dir string, p PendingEpoch) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, PendingEpochFile), append(b, '\n')); err != nil {
		return fmt.Errorf("record the new log epoch before repairing the spool: %w", err)
	}
	return nil
}

// RemovePendingEpoch removes dir's pending epoch file and returns its size
// (0 when there was none).
func RemovePendingEpoch(dir string) (int64, error) {
	path := filepath.Join(dir, PendingEpochFile)
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	return fi.Size(), nil
}
