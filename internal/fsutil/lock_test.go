package fsutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestDataDirLock: a second lock on a held data dir fails with the
// holder's pid, and succeeds once the holder lets go.
func TestDataDirLock(t *testing.T) {
	dir := t.TempDir()
	l, err := LockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = LockDataDir(dir)
	var inUse *DataDirInUseError
	if !errors.As(err, &inUse) || inUse.PID != os.Getpid() {
		t.Fatalf("second lock: %v, want in use by pid %d", err, os.Getpid())
	}
	if want := fmt.Sprintf("data dir %s is in use by another auditproxy (pid %d)", dir, os.Getpid()); err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	l.Close()
	l2, err := LockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	l2.Close()
	if _, err := LockDataDir(filepath.Join(dir, "missing")); err == nil || errors.As(err, &inUse) {
		t.Errorf("lock of a missing dir: %v", err)
	}
}
