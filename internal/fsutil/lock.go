package fsutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// LockFileName is the file in the data directory that a sidecar holds
// locked for as long as it runs.
const LockFileName = "lock"

// DataDirInUseError is returned by LockDataDir when another process holds
// the data directory. PID is 0 when the holder's pid could not be read.
type DataDirInUseError struct {
	Dir string
	PID int
}

func (e *DataDirInUseError) Error() string {
	holder := "pid unknown"
	if e.PID > 0 {
		holder = "pid " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("data dir %s is in use by another auditproxy (%s)", e.Dir, holder)
}

// DataDirLock is an exclusive lock on a data directory: DATA-DIR/lock, held
// with flock(2) (LOCK_EX|LOCK_NB) on an open file. Two sidecars writing one
// spool would fork its log (both continue the same origin from the same
// seq), so a second writer is refused. The kernel releases the lock when the
// holder exits, however it exits (kill -9 included), so a stale lock file
// never blocks a restart. Readers (export, verify, query) take no lock: they
// read only committed records and are safe beside a live writer.
//
// The file holds the holder's pid, for the refusal message; it is only
// informative, the lock is what counts.
type DataDirLock struct {
	f *os.File
}

// LockDataDir takes the lock on dataDir (which must exist) for this
// process, or fails with a *DataDirInUseError that names the holder:
//
//	data dir X is in use by another auditproxy (pid N)
func LockDataDir(dataDir string) (*DataDirLock, error) {
	path := filepath.Join(dataDir, LockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data dir %s: %w", dataDir, err)
	}
	if err := flockExclusive(f); err != nil {
		f.Close()
		if !errors.Is(err, errWouldBlock) {
			return nil, fmt.Errorf("lock data dir %s: %w", dataDir, err)
		}
		inUse := &DataDirInUseError{Dir: dataDir}
		if b, rerr := os.ReadFile(path); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
				inUse.PID = pid
			}
		}
		return nil, inUse
	}
	// The pid is written after the lock is taken, so a reader that finds the
	// lock held may read an empty file for a moment: "pid unknown".
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &DataDirLock{f: f}, nil
}

// Close releases the lock. The file stays: removing it would let a process
// that opened it before the removal lock a file nobody else can see.
func (l *DataDirLock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
