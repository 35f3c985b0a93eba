package main

import (
	"go/build"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const modulePath = "github.com/auditproxy/auditproxy"

// moduleImports returns, for each package of the module, the module's
// packages it imports, directly or not, through its non-test files.
func moduleImports(t *testing.T) map[string][]string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	direct := map[string][]string{}
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata") {
			return filepath.SkipDir
		}
		pkg, err := build.ImportDir(path, 0)
		if err != nil {
			return nil // no Go files here
		}
		rel, _ := filepath.Rel(root, path)
		var own []string
		for _, imp := range pkg.Imports {
			if p, ok := strings.CutPrefix(imp, modulePath+"/"); ok {
				own = append(own, p)
			}
		}
		direct[filepath.ToSlash(rel)] = own
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	all := map[string][]string{}
	var walk func(p string, seen map[string]bool)
	walk = func(p string, seen map[string]bool) {
		for _, q := range direct[p] {
			if !seen[q] {
				seen[q] = true
				walk(q, seen)
			}
		}
	}
	for p := range direct {
		seen := map[string]bool{}
		walk(p, seen)
		all[p] = []string{}
		for q := range seen {
			all[p] = append(all[p], q)
		}
		slices.Sort(all[p])
	}
	return all
}

// TestImportsFollowTheDataPath: the data path reads one way, proxy →
// audit.Recorder → spool (with auditlog as its log) → forward, and nothing
// imports what comes after it on the path: the proxy knows only the
// Recorder contract, the schema knows nobody, the log knows nothing of the
// spool it is kept in, and the leaves stay leaves.
func TestImportsFollowTheDataPath(t *testing.T) {
	imports := moduleImports(t)
	for _, rule := range []struct {
		pkg   string
		never []string // prefixes of packages pkg must not import
	}{
		{"audit", []string{""}},
		{"proxy", []string{"spool", "forward", "auditlog", "identity", "query", "cmd", "bench"}},
		{"auditlog", []string{"spool", "forward", "proxy", "identity", "query", "cmd", "bench"}},
		{"spool", []string{"forward", "proxy", "identity", "query", "cmd", "bench"}},
		{"forward", []string{"proxy", "identity", "query", "cmd"}},
		{"query", []string{"spool", "forward", "proxy", "auditlog", "eventsrc", "cmd", "bench"}},
		{"eventsrc", []string{"forward", "proxy", "identity", "query", "cmd", "bench"}},
		{"identity", []string{"spool", "forward", "proxy", "auditlog", "cmd", "bench"}},
		{"change", []string{"spool", "forward", "proxy", "auditlog", "identity", "query", "eventsrc", "cmd", "bench"}},
		{"hashing", []string{"audit", "spool", "forward", "proxy", "auditlog", "identity", "cmd", "bench"}},
		{"gpu", []string{""}},
		{"payload", []string{"audit", "auditlog", "change", "spool", "forward", "proxy", "identity", "query", "eventsrc", "hashing", "gpu", "cmd", "bench", "internal/jcs", "internal/fsutil", "internal/fakevllm", "internal/forwardrecv", "internal/testutil"}}, // internal/redact alone
		{"internal/redact", []string{""}},
		{"internal/jcs", []string{""}},
		{"internal/fsutil", []string{""}},
	} {
		deps, ok := imports[rule.pkg]
		if !ok {
			t.Errorf("no package %s in the module", rule.pkg)
			continue
		}
		for _, dep := range deps {
			for _, never := range rule.never {
				if never == "" || dep == never || strings.HasPrefix(dep, never+"/") {
					t.Errorf("%s imports %s", rule.pkg, dep)
				}
			}
		}
	}
	// Nothing but the binary (and test set-up) links cmd/ or bench/.
	for pkg, deps := range imports {
		if strings.HasPrefix(pkg, "cmd/") || strings.HasPrefix(pkg, "bench") || pkg == "internal/testutil" {
			continue
		}
		for _, dep := range deps {
			if strings.HasPrefix(dep, "cmd/") || strings.HasPrefix(dep, "bench") {
				t.Errorf("%s imports %s", pkg, dep)
			}
		}
	}
}
