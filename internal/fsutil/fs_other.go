//go:build !linux

package fsutil

import (
	"errors"
	"os"
)

// On systems other than Linux the data dir is not locked and free space is
// not checked: the sidecar is built and supported for Linux, and these stubs
// only keep the package compiling for development elsewhere.

var errWouldBlock = errors.New("lock held by another process")

func flockExclusive(*os.File) error { return nil }

func StatfsFree(string) (free, total int64, err error) {
	return 0, 0, errors.ErrUnsupported
}
