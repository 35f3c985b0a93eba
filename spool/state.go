package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/auditproxy/auditproxy/internal/fsutil"
)

// stateFileName is the spool's state file. It is replaced atomically (write
// a temporary file, fsync it, rename it over the old one, fsync the
// directory), so it is always the old or the new state, never a mix.
const stateFileName = "state.json"

// spoolState is what the spool keeps between runs. Written is where the
// committed records ended when the state was saved (a check: the segments
// must hold at least that much); Acked is the end of the last event the
// aggregator acknowledged, where shipping resumes.
type spoolState struct {
	Version int `json:"version"`
	Written Pos `json:"written"`
	Acked   Pos `json:"acked"`
}

// errStateMissing is loadState's error when there is no state file.
var errStateMissing = errors.New(stateFileName + " is missing")

// loadState reads the state file. Its errors say what is wrong with it:
// errStateMissing, not JSON, an unknown version (written by a newer
// auditproxy), or a position that cannot be one.
func loadState(dir string) (spoolState, error) {
	var st spoolState
	b, err := os.ReadFile(filepath.Join(dir, stateFileName))
	if errors.Is(err, os.ErrNotExist) {
		return st, errStateMissing
	}
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return spoolState{}, fmt.Errorf("%s is not a spool state (%v)", stateFileName, err)
	}
	if st.Version != 1 {
		return spoolState{}, fmt.Errorf("%s has unknown version %d (this auditproxy reads version 1; written by a newer one?)", stateFileName, st.Version)
	}
	if st.Written.Offset < 0 || st.Acked.Offset < 0 {
		return spoolState{}, fmt.Errorf("%s holds a negative offset (written %s, acked %s)", stateFileName, st.Written, st.Acked)
	}
	return st, nil
}

// saveState writes the state file and returns its size.
func saveState(dir string, st spoolState) (int64, error) {
	b, err := json.Marshal(st)
	if err != nil {
		return 0, err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, stateFileName), append(b, '\n')); err != nil {
		return 0, fmt.Errorf("write spool state: %w", err)
	}
	return int64(len(b) + 1), nil
}
