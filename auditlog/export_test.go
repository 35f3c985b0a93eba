package auditlog

import (
	"os"
	"path/filepath"
	"testing"
)

// Internals for the tests in package auditlog_test, which run a Log on a
// real spool: package spool imports auditlog, so they cannot be in package
// auditlog.

type TreeFile = treeFile

const TreeRewriteMin = treeRewriteMin

var FrontierIndexes = frontierIndexes

// Tree returns the log's stored hashes file.
func (l *Log) Tree() *TreeFile { return l.tree }

func (t *treeFile) HeaderBytes() int64 { return t.hdr }
func (t *treeFile) BaseIndex() int64   { return t.baseIndex() }
func (t *treeFile) BaseSize() int64    { return t.baseSize() }
func (t *treeFile) Bytes() int64       { return t.size.Load() }
func (t *treeFile) Stored() int64      { return t.n.Load() }
func (t *treeFile) Sync() error        { return t.sync() }

// SetBacklogMax bounds the hashes kept in memory while writes fail.
func (t *treeFile) SetBacklogMax(n int) {
	t.mu.Lock()
	t.backlogMax = n
	t.mu.Unlock()
}

// FailWrites makes the file's writes fail (as ENOSPC or EIO would) until
// the returned function is called.
func (t *treeFile) FailWrites(tb testing.TB) (restore func()) {
	tb.Helper()
	ro, err := os.Open(filepath.Join(t.dir, HashStoreFile))
	if err != nil {
		tb.Fatal(err)
	}
	t.mu.Lock()
	good := t.f
	t.f = ro
	t.mu.Unlock()
	return func() {
		t.mu.Lock()
		t.f = good
		t.mu.Unlock()
		ro.Close()
	}
}
