// Package fsutil holds the file-system steps that durable state needs and
// that several packages share: replacing a file atomically, fsyncing a
// directory, creating a secret file, locking a data directory, and reading
// a file system's free space.
package fsutil

import (
	"os"
	"path/filepath"
)

// WriteFileAtomic replaces path with data (mode 0600) so that a crash
// leaves the old file or the new one, never a mix: write a temporary file,
// fsync it, rename it over path, fsync the directory.
func WriteFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	err := WriteFileSynced(tmp, data)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = SyncDir(filepath.Dir(path))
	}
	return err
}

// WriteFileSynced writes data to path (mode 0600) and fsyncs it; the caller
// fsyncs the directory.
func WriteFileSynced(path string, data []byte) error {
	return writeSynced(path, os.O_TRUNC, data)
}

// writeSynced creates or opens path (mode 0600) with flag added to
// O_WRONLY|O_CREATE, writes data and fsyncs it.
func writeSynced(path string, flag int, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|flag, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// SyncDir fsyncs directory dir, making the creation, rename or removal of
// its entries durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
