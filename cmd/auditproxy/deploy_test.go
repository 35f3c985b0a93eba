package main

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/auditproxy/auditproxy/internal/testutil"
)

// repoRoot is the repository's top directory, from this package's.
const repoRoot = "../.."

// TestReleaseBuildRecipe builds the binary with the script the Dockerfile
// runs, so that a broken or changed recipe fails here and not in an image
// build nobody ran: the version is stamped, and NVML's symbols bind lazily.
func TestReleaseBuildRecipe(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the release binary")
	}
	dockerfile, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(dockerfile, []byte("RUN scripts/build-binary.sh /out/auditproxy")) {
		t.Fatal("the Dockerfile does not build with scripts/build-binary.sh: CI no longer checks its recipe")
	}
	if !bytes.Contains(dockerfile, []byte(`CMD ["/usr/local/bin/auditproxy", "healthcheck"`)) {
		t.Error("the Dockerfile's HEALTHCHECK does not run auditproxy healthcheck")
	}
	bin := filepath.Join(t.TempDir(), "auditproxy")
	cmd := exec.Command("sh", "scripts/build-binary.sh", bin, "v9.9.9-test")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/build-binary.sh: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil || !strings.Contains(string(out), "v9.9.9-test") {
		t.Errorf("release binary's version: %q, %v", out, err)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Section(".dynamic") == nil {
		t.Fatal("the release binary is not dynamically linked: cgo is off, and NVML cannot load")
	}
	// With immediate binding a driver that lacks a newer NVML symbol kills
	// the binary at start (field notes).
	flags, _ := f.DynValue(elf.DT_FLAGS)
	flags1, _ := f.DynValue(elf.DT_FLAGS_1)
	for _, v := range flags {
		if elf.DynFlag(v)&elf.DF_BIND_NOW != 0 {
			t.Error("the release binary binds symbols at start (DF_BIND_NOW)")
		}
	}
	for _, v := range flags1 {
		if elf.DynFlag1(v)&elf.DF_1_NOW != 0 {
			t.Error("the release binary binds symbols at start (DF_1_NOW)")
		}
	}
}

// TestPrometheusRules checks the alert rules with promtool and runs their
// unit tests (deploy/prometheus/alerts_test.yaml): each alert fires on the
// series that should raise it and stays quiet on a healthy sidecar. CI
// installs promtool and sets AUDITPROXY_REQUIRE_PROMTOOL=1.
func TestPrometheusRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("AUDITPROXY_REQUIRE_PROMTOOL") != "" {
			t.Fatal("promtool not found, and AUDITPROXY_REQUIRE_PROMTOOL is set")
		}
		t.Skip("promtool not installed (apt-get install prometheus)")
	}
	dir := filepath.Join(repoRoot, "deploy", "prometheus")
	for _, args := range [][]string{{"check", "rules", "alerts.yaml"}, {"test", "rules", "alerts_test.yaml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}

	// The dashboard's queries parse as PromQL: promtool checks them as the
	// expressions of recording rules, Grafana's variables filled in.
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "grafana", "auditproxy.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	n := 0
	fill := strings.NewReplacer("$__rate_interval", "1m", "$instance", ".*")
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			expr, _ := json.Marshal(fill.Replace(tg.Expr)) // a JSON string is a YAML string
			fmt.Fprintf(&rules, "      - record: dashboard:query_%d\n        expr: %s\n", n, expr)
			n++
		}
	}
	if n < 20 {
		t.Fatalf("the dashboard has %d queries", n)
	}
	file := filepath.Join(t.TempDir(), "dashboard-queries.yaml")
	if err := os.WriteFile(file, []byte(rules.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput(); err != nil {
		t.Errorf("the dashboard's queries: promtool check rules: %v\n%s", err, out)
	}
}

// TestDeployFilesNameRealMetricsAndFlags: every metric the dashboard, the
// alerts and the docs name is one the binary exports, and every
// AUDITPROXY_ variable the manifests and docs set is a flag of some command.
// A renamed metric or flag fails here rather than in a silent dashboard or a
// sidecar that ignores its setting.
func TestDeployFilesNameRealMetricsAndFlags(t *testing.T) {
	defined := map[string]bool{}
	metricName := regexp.MustCompile(`"(auditproxy_[a-z0-9_]+)"`)
	err := filepath.WalkDir(repoRoot, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		b, err := os.ReadFile(path)
		for _, m := range metricName.FindAllSubmatch(b, -1) {
			defined[string(m[1])] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	envs := map[string]bool{}
	envName := regexp.MustCompile(`\[\$(AUDITPROXY_[A-Z0-9_]+)\]`)
	for _, cmd := range []string{"serve", "demo", "export", "annotate", "checksum", "keygen", "verify", "prove", "verify-proof", "show", "query", "keyid", "healthcheck"} {
		var out, errOut bytes.Buffer
		run([]string{cmd, "-h"}, &out, &errOut)
		for _, m := range envName.FindAllStringSubmatch(out.String()+errOut.String(), -1) {
			envs[m[1]] = true
		}
	}
	if !envs["AUDITPROXY_UPSTREAM"] || !envs["AUDITPROXY_ADMIN"] {
		t.Fatalf("help texts list no environment variables: %v", envs)
	}

	files := []string{filepath.Join(repoRoot, "README.md"), filepath.Join(repoRoot, "Dockerfile")}
	for _, glob := range []string{"deploy/*/*.yaml", "deploy/*/*.json", "deploy/*/*.md", "docs/*.md"} {
		m, _ := filepath.Glob(filepath.Join(repoRoot, glob))
		files = append(files, m...)
	}
	used := regexp.MustCompile(`\bauditproxy_[a-z0-9_]+`)
	usedEnv := regexp.MustCompile(`\bAUDITPROXY_[A-Z0-9_]+`)
	checked := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range used.FindAllString(string(b), -1) {
			base := name
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if trimmed, ok := strings.CutSuffix(name, suffix); ok && defined[trimmed] {
					base = trimmed
				}
			}
			if !defined[base] && !strings.HasPrefix(name, "auditproxy_test") {
				t.Errorf("%s names metric %s, which the binary does not export", f, name)
			}
			checked++
		}
		for _, name := range usedEnv.FindAllString(string(b), -1) {
			if name == "AUDITPROXY_REQUIRE_PROMTOOL" {
				continue
			}
			if !envs[name] {
				t.Errorf("%s sets %s, which is no flag's variable", f, name)
			}
			checked++
		}
	}
	if checked < 50 {
		t.Errorf("only %d metric and variable names found in the deploy files and docs", checked)
	}
}

// TestAuditorGuideScript runs the script that writes docs/auditor-guide.md,
// into a temporary file: the guide's commands run against the current
// binary and a real demo, so a changed command or output format breaks here.
func TestAuditorGuideScript(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo and every command of the auditor guide")
	}
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	testutil.NeedSSHKeygen(t) // the operators sign their change record
	out := filepath.Join(t.TempDir(), "guide.md")
	cmd := exec.Command("bash", filepath.Join(repoRoot, "docs", "auditor-guide.sh"), out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docs/auditor-guide.sh: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	guide := string(b)
	for _, want := range []string{
		"\nverified\n",                              // verify: the whole log
		"inference events: 2: ok 2,",                // query --stats of one key's requests
		"\nDAY FROM ",                               // query --stats --by key,day
		"\ngrouping,model,checksum,",                // ... --format csv
		"in the window: verified\n",                 // report --html
		"matches the event",                         // show: a decrypted body against its digest
		"verified: event",                           // verify-proof
		`"type":"model_rollout"`,                    // the operator's annotation in the window
		`"role":"approver"`,                         // query --resource: the change and its approval
		`"type":"change_outcome"`,                   // ... and its outcome
		"change records: 1 signed",                  // verify --allowed-signers
		"model checksum: blake3:",                   // checksum of the weights
		"in the signed log: event",                  // show --pubkey
		"What is the refund policy for order 1182?", // the reconstructed request body
	} {
		if !strings.Contains(guide, want) {
			t.Errorf("the generated guide lacks %q", want)
		}
	}
	if strings.Contains(guide, "sk-alice") || strings.Contains(guide, os.TempDir()+"/") {
		t.Error("the generated guide shows an API key or a temporary path")
	}
	// The checksum the event recorded is the one checksum recomputes.
	sum := regexp.MustCompile(`model checksum: (blake3:[0-9a-f]{64})`).FindStringSubmatch(guide)
	if sum == nil || !strings.Contains(guide, `"checksum":"`+sum[1]+`"`) {
		t.Error("the event's model.checksum is not the one auditproxy checksum prints")
	}
}
