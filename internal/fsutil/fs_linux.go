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

// Fdatasync flushes f's data and the metadata needed to read it back (its
// size, its blocks), not its times: fdatasync(2). Where a write changed no
// such metadata (written in place into blocks already written), it is one
// data write and a cache flush, without a journal commit.
func Fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EINTR) {
			return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
		}
	}
}

// Preallocate allocates f's blocks up to size bytes and extends f to size
// if it is shorter (fallocate(2), mode 0): the blocks read as zeros. It
// fails with an error wrapping errors.ErrUnsupported where the file system
// cannot (the caller may write zeros instead).
func Preallocate(f *os.File, size int64) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() >= size {
		return nil
	}
	for {
		err := syscall.Fallocate(int(f.Fd()), 0, fi.Size(), size-fi.Size())
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EOPNOTSUPP), errors.Is(err, syscall.ENOSYS):
			return &os.PathError{Op: "fallocate", Path: f.Name(), Err: errors.ErrUnsupported}
		}
		return &os.PathError{Op: "fallocate", Path: f.Name(), Err: err}
	}
}
