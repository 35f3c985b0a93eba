//go:build !linux

package fsutil

import (
	"errors"
	"os"
)

// On systems other than Linux the data dir is not locked, free space is
// not checked, files are not preallocated and fdatasync is fsync: the sidecar is built and supported for Linux, and these stubs
// only keep the package compiling for development elsewhere.

var errWouldBlock = errors.New("lock held by another process")

func flockExclusive(*os.File) error { return nil }

func StatfsFree(string) (free, total int64, err error) {
	return 0, 0, errors.ErrUnsupported
}

// Fdatasync is f.Sync (fsync) where fdatasync(2) is not available.
func Fdatasync(f *os.File) error { return f.Sync() }

// Preallocate is not done here: files grow as they are written.
func Preallocate(f *os.File, size int64) error {
	return &os.PathError{Op: "fallocate", Path: f.Name(), Err: errors.ErrUnsupported}
}
