package fsutil

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// link is os.Link; tests replace it to take the path for file systems
// without hard links.
var link = os.Link

// CreateSecretFile creates path holding data, readable and writable by its
// owner only (mode 0600). It never replaces a file: where path exists it
// fails with an error wrapping fs.ErrExist. The file and its directory are
// fsynced before it returns.
//
// Nobody sees the file empty or half written, neither a process that reads
// it while it is created nor the next start after a crash: data is written
// and fsynced to a temporary file in the same directory, which is then
// hard-linked to path (link(2), like O_EXCL, fails where the name exists).
// On a file system without hard links (FAT, some network file systems) the
// file is created with O_EXCL and written in place instead.
func CreateSecretFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*") // mode 0600
	if err != nil {
		return createError(path, err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // a name of the content path keeps, once linked
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return createError(path, err)
	}
	switch err := link(tmpName, path); {
	case err == nil:
	case errors.Is(err, fs.ErrExist):
		return createError(path, fs.ErrExist)
	default:
		if _, serr := os.Lstat(path); serr == nil {
			return createError(path, fs.ErrExist)
		}
		if err := createExclusive(path, data); err != nil {
			return err
		}
	}
	return SyncDir(dir)
}

// createError names path, rather than the temporary file, in err.
func createError(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return &fs.PathError{Op: "create", Path: path, Err: err}
}

// createExclusive is CreateSecretFile for a file system without hard links:
// a reader may find the file empty until data is written.
func createExclusive(path string, data []byte) error {
	err := writeSynced(path, os.O_EXCL, data)
	if err != nil && !errors.Is(err, fs.ErrExist) {
		os.Remove(path) // not left behind empty or cut, to be read as the secret
	}
	return err
}

// LoadOrCreateSecretFile returns the content of path. Where path does not
// exist it creates it (CreateSecretFile) with what generate returns. When
// several processes create it at once, one of them creates it and all
// return its content.
func LoadOrCreateSecretFile(path string, generate func() ([]byte, error)) ([]byte, error) {
	b, err := os.ReadFile(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return b, err
	}
	data, err := generate()
	if err != nil {
		return nil, fmt.Errorf("generate %s: %w", path, err)
	}
	err = CreateSecretFile(path, data)
	if errors.Is(err, fs.ErrExist) {
		return os.ReadFile(path) // another process created it first
	}
	if err != nil {
		return nil, err
	}
	return data, nil
}
