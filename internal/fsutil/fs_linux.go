package fsutil

import (
	"errors"
	"os"
	"syscall"
)

// errWouldBlock is what flockExclusive returns when another open file holds
// the lock.
var errWouldBlock = errors.New("lock held by another process")

func flockExclusive(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EWOULDBLOCK):
			return errWouldBlock
		}
		return err
	}
}

// StatfsFree returns the bytes of the filesystem holding path that an
// unprivileged process may still write (f_bavail: the root reserve is not
// ours to use), and the filesystem's size.
func StatfsFree(path string) (free, total int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, 0, &os.PathError{Op: "statfs", Path: path, Err: err}
	}
	return int64(st.Bavail) * st.Bsize, int64(st.Blocks) * st.Bsize, nil
}
