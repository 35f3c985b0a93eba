package main

import (
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"encoding/json"
	"fmt"
	"html"
	"image/png"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/auditlog"
)

// reportLog writes a signed log of three days (2026-11-20 to 22, UTC)
// with an hourly checkpoint: requests of two keys and an anonymous one on
// the first and third days, none on the second; the weights behind the
// model changed and an operator recorded the rollout on the third; the
// sidecar was stopped from 06:00 to 09:00 that day. One model name is
// hostile: markup, for the page to escape. It returns the log file and the
// verifier key file.
func reportLog(t *testing.T) (logFile, pub string) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(cryptorand.Reader, "gpu-node-7")
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	c, _ := auditlog.NewChain(auditlog.ChainState{Origin: "gpu-node-7/20261120T000000Z"})
	src := audit.Source{Host: "gpu-node-7", Version: "test"}
	var log []byte
	add := func(ev []byte) {
		t.Helper()
		var err error
		if log, err = c.Append(log, ev); err != nil {
			t.Fatal(err)
		}
		log = append(log, '\n')
	}
	ops := func(typ string, details any, at time.Time) {
		t.Helper()
		ev, err := audit.NewOpsEvent(typ, details, src, at)
		if err != nil {
			t.Fatal(err)
		}
		add(ev)
	}
	n := 0
	infer := func(at time.Time, model, sum, key, outcome string, total float64, ttft float64, in, out int64) {
		n++
		ev := audit.Event{V: 1, Type: audit.TypeInference, ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", n), Time: audit.Timestamp(at),
			RequestID: fmt.Sprintf("req-%d", n), Method: "POST", Path: "/v1/chat/completions", Model: audit.Model{Name: model, Checksum: sum},
			Latency: audit.Latency{Total: total, Upstream: total}, Status: audit.Status{Code: 200, Outcome: audit.Outcome(outcome)}, Source: src}
		if key != "" {
			ev.APIKeyID = &key
		}
		if ttft > 0 {
			ev.Latency.TTFT = &ttft
		}
		if in >= 0 {
			ev.Input.Tokens = &in
		}
		if out >= 0 {
			ev.Output.Tokens = &out
		}
		add(ev.AppendJSON(nil))
	}
	checkpoint := func(at time.Time, final bool) {
		t.Helper()
		var err error
		if log, err = c.AppendCheckpointEvent(log, signer, at, time.Hour, final, src); err != nil {
			t.Fatal(err)
		}
		log = append(log, '\n')
	}
	day := func(d, h, m int) time.Time { return time.Date(2026, 11, 20+d, h, m, 0, 0, time.UTC) }
	const llama = "meta-llama/Llama-3.1-8B-Instruct"
	add(fmt.Appendf(nil, `{"v":1,"type":"log_started","id":"ls","time":%q,"log_started":{"reason":"new data dir","previous_checkpoint":null},"source":{"host":"gpu-node-7","version":"test"}}`, day(0, 0, 0).Format(time.RFC3339Nano)))
	ops(audit.TypeProxyStarted, map[string]any{"version": "test", "upstream": "http://127.0.0.1:8000", "hash": "sha256", "gpu": nil, "capture_payloads": false}, day(0, 0, 0))
	ops(audit.TypeModelChanged, map[string]any{"model": llama, "after": "blake3:a1a1a1a1a1a1a1a1a1a1"}, day(0, 0, 1))
	for d := 0; d < 3; d++ {
		for h := 0; h < 24; h++ {
			switch {
			case d == 0 && h == 10:
				infer(day(0, 10, 5), llama, "blake3:a1a1a1a1a1a1a1a1a1a1", "k1:aa", "ok", 100, 10, 10, 20)
				infer(day(0, 10, 6), llama, "blake3:a1a1a1a1a1a1a1a1a1a1", "k1:bb", "ok", 200, 20, 11, 21)
				infer(day(0, 10, 7), llama, "blake3:a1a1a1a1a1a1a1a1a1a1", "k1:aa", "upstream_error", 300, 0, 12, -1)
				infer(day(0, 10, 8), `</table><script>alert(1)</script>`, "", "", "rejected", 1, 0, -1, -1)
			case d == 2 && h == 3:
				ops(audit.TypeModelChanged, map[string]any{"model": llama, "before": "blake3:a1a1a1a1a1a1a1a1a1a1", "after": "blake3:b2b2b2b2b2b2b2b2b2b2"}, day(2, 3, 10))
				ops(audit.TypeAnnotation, map[string]any{"record": map[string]any{"type": "model_rollout", "resource": "gpu-node-7/" + llama,
					"actor": "alice@example.com", "approver": "carol@example.com", "ticket": "CHG-2291", "justification": strings.Repeat("rev 2024-09 ", 200)}}, day(2, 3, 11))
				infer(day(2, 3, 20), llama, "blake3:b2b2b2b2b2b2b2b2b2b2", "k1:aa", "ok", 400, 40, 13, 23)
				infer(day(2, 3, 21), llama, "blake3:b2b2b2b2b2b2b2b2b2b2", "k1:cc", "client_cancelled", 500, 50, -1, -1)
				infer(day(2, 3, 22), llama, "blake3:b2b2b2b2b2b2b2b2b2b2", "k1:cc", "ok", 600, 0, 15, 25)
			case d == 2 && h == 6:
				ops(audit.TypeProxyStopped, map[string]any{"reason": "signal", "events_recorded": 12}, day(2, 6, 0))
				checkpoint(day(2, 6, 0), true)
				continue
			case d == 2 && (h == 7 || h == 8):
				continue // stopped
			case d == 2 && h == 9:
				ops(audit.TypeProxyStarted, map[string]any{"version": "test", "upstream": "http://127.0.0.1:8000", "hash": "sha256", "gpu": nil, "capture_payloads": false}, day(2, 9, 0))
			}
			checkpoint(day(d, h, 30), false)
		}
	}
	dir := t.TempDir()
	logFile, pub = filepath.Join(dir, "events.ndjson"), filepath.Join(dir, "signing.key.pub")
	os.WriteFile(logFile, log, 0o644)
	os.WriteFile(pub, []byte(vkey+"\n"), 0o644)
	return logFile, pub
}

// chromium finds Debian's chromium (or Chrome), or skips the test; with
// AUDITPROXY_REQUIRE_CHROMIUM=1 (CI) it fails instead.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("AUDITPROXY_REQUIRE_CHROMIUM") != "" {
		t.Fatal("chromium is not installed (apt-get install chromium), and AUDITPROXY_REQUIRE_CHROMIUM is set")
	}
	t.Skip("chromium is not installed (apt-get install chromium)")
	return ""
}

// headless runs chromium on a local page with args (--dump-dom,
// --screenshot=F, --print-to-pdf=F) and returns its standard output.
func headless(t *testing.T, browser, page string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	home := t.TempDir() // a profile of its own: nothing of the user's, nothing kept
	cmd := exec.CommandContext(ctx, browser, append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--user-data-dir=" + home, "--hide-scrollbars", "--window-size=1280,2000"}, append(args, "file://"+page)...)...)
	cmd.Env = append(os.Environ(), "HOME="+home)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", browser, strings.Join(args, " "), err, errOut.String())
	}
	return out.Bytes()
}

// artifactDir is where the report's screenshot and PDF are kept: under
// $AUDITPROXY_ARTIFACTS when set (.ci/run sets it), else the test's own
// artifact directory (go test -artifacts).
func artifactDir(t *testing.T) string {
	if d := os.Getenv("AUDITPROXY_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.ArtifactDir()
}

// TestReportInBrowser: the HTML report renders in a real browser, its
// figures are those query --stats --format json prints for the same log
// and window, it fetches nothing and runs nothing, and it shows the
// verification, the checkpoint gaps and the changes.
func TestReportInBrowser(t *testing.T) {
	browser := chromium(t)
	logFile, pub := reportLog(t)
	page := filepath.Join(t.TempDir(), "report.html")
	window := []string{"--since", "2026-11-10", "--until", "2026-11-23", "--tz", "Europe/Paris"}
	var out, errOut bytes.Buffer
	if code := run(append(append([]string{"report", "--html", page, "--pubkey", pub}, window...), logFile), &out, &errOut); code != 0 {
		t.Fatalf("report: %d %s", code, errOut.String())
	}
	if want := "auditproxy: report: 1 logs, 7 inference events and 7 changes in the window: verified\n"; !strings.HasPrefix(errOut.String(), want) {
		t.Errorf("report said %q, want %q", errOut.String(), want)
	}
	out.Reset()
	if code := run(append(append([]string{"query", "--stats", "--by", "day,key,model,outcome", "--format", "json"}, window...), logFile), &out, &errOut); code != 0 {
		t.Fatalf("query --stats: %d %s", code, errOut.String())
	}
	var stats map[string]any
	if err := json.Unmarshal(out.Bytes(), &stats); err != nil {
		t.Fatal(err)
	}

	dom := string(headless(t, browser, page, "--dump-dom"))
	if !strings.Contains(dom, `<div class="verdict ok" id="verdict">VERIFIED</div>`) {
		t.Errorf("no VERIFIED verdict in the rendered page")
	}

	// Every figure of every table, against the JSON: the rows in the same
	// order, each cell's exact value and the text it shows.
	groups := map[string][]any{"total": {stats}}
	for _, g := range []string{"day", "key", "model", "outcome"} {
		groups[g] = stats["groups"].(map[string]any)[g].([]any)
	}
	tableRE := regexp.MustCompile(`(?s)<table id="[^"]*" data-group="(\w+)">(.*?)</table>`)
	rowRE := regexp.MustCompile(`(?s)<tr (?:class="folded" data-folded="(\d+)"|data-key="[^"]*")>(.*?)</tr>`)
	cellRE := regexp.MustCompile(`<td class="n" data-figure="(\w+)" data-value="([^"]*)">([^<]*)</td>`)
	member := map[string]string{"latency_p50": "latency_ms.total.p50", "latency_p95": "latency_ms.total.p95", "latency_p99": "latency_ms.total.p99",
		"ttft_p50": "latency_ms.ttft.p50", "ttft_p95": "latency_ms.ttft.p95", "ttft_p99": "latency_ms.ttft.p99"}
	checked, folded := 0, 0
	tables := tableRE.FindAllStringSubmatch(dom, -1)
	if len(tables) != 5 {
		t.Fatalf("%d figure tables in the page, want 5", len(tables))
	}
	for _, tm := range tables {
		rows := rowRE.FindAllStringSubmatch(tm[2], -1)
		var want []any
		for i, r := range rows { // a run of days without inferences is one row
			if r[1] == "" {
				continue
			}
			n, _ := strconv.Atoi(r[1])
			rows = append(rows[:i:i], rows[i+1:]...)
			for j := 0; j < n; j++ {
				if day := groups[tm[1]][i+j].(map[string]any); day["events"].(float64) != 0 {
					t.Errorf("a folded row holds %v, a day with inferences", day["from"])
				}
			}
			groups[tm[1]] = append(groups[tm[1]][:i:i], groups[tm[1]][i+n:]...)
			folded += n
			break // one run in this window
		}
		want = groups[tm[1]]
		if len(rows) != len(want) {
			t.Errorf("table %s: %d rows, query has %d", tm[1], len(rows), len(want))
			continue
		}
		for i, r := range rows {
			cells := cellRE.FindAllStringSubmatch(r[2], -1)
			if len(cells) != 14 {
				t.Errorf("table %s row %d: %d figures", tm[1], i, len(cells))
			}
			for _, c := range cells {
				name, value, text := c[1], c[2], html.UnescapeString(c[3])
				path := member[name]
				if path == "" {
					path = name
				}
				var got any = want[i]
				for _, k := range strings.Split(path, ".") {
					if m, ok := got.(map[string]any); ok {
						got = m[k]
					} else {
						got = nil
					}
				}
				wantValue := "null"
				if f, ok := got.(float64); ok {
					wantValue = strconv.FormatFloat(f, 'g', -1, 64)
				}
				if value != wantValue {
					t.Errorf("table %s row %d %s: page %s, query --stats %s", tm[1], i, name, value, wantValue)
				}
				f, _ := strconv.ParseFloat(value, 64)
				wantText := map[bool]string{true: "–", false: strconv.FormatFloat(f, 'f', -1, 64)}[value == "null"]
				switch {
				case value == "null":
				case name == "error_rate":
					wantText = strconv.FormatFloat(f*100, 'f', 2, 64) + "%"
				case strings.Contains(name, "_p"):
					wantText = strconv.FormatFloat(f, 'f', 1, 64)
				case strings.HasSuffix(name, "_tokens"):
					if unknown := want[i].(map[string]any)[name+"_unknown"].(float64); unknown > 0 {
						wantText = fmt.Sprintf("%s (+%d unknown)", value, int(unknown))
						if unknown == want[i].(map[string]any)["events"].(float64) {
							wantText = "unknown"
						}
					}
				}
				if text != wantText {
					t.Errorf("table %s row %d %s shows %q, want %q", tm[1], i, name, text, wantText)
				}
				checked++
			}
		}
	}
	// 1 total + 3 days (the 20th to the 22nd in Paris: from 23:00 UTC on
	// the 19th) + 4 keys + 3 model versions + 4 outcomes, 14 figures each;
	// the 10 days before the log began, one row.
	if checked != (1+3+4+3+4)*14 || folded != 10 {
		t.Errorf("%d figures checked, %d days folded", checked, folded)
	}

	// The stop is a gap of its own kind; the changes are listed with who
	// made and approved them; a hostile name is text, not markup.
	for _, want := range []string{
		`<td>stopped</td><td>the sidecar stopped (final checkpoint) and started again</td>`,
		`<td>2026-11-22T07:00:00+01:00</td><td>2026-11-22T10:30:00+01:00</td><td class="n">3h30m0s</td>`,
		`alice@example.com, approved by carol@example.com; unsigned`,
		`CHG-2291`,
		`model meta-llama/Llama-3.1-8B-Instruct: weights blake3:a1a1a1a1a1a1a1a1a1a1 → blake3:b2b2b2b2b2b2b2b2b2b2`,
		`&lt;/table&gt;&lt;script&gt;alert(1)&lt;/script&gt;`,
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the rendered page lacks %q", want)
		}
	}
	if !regexp.MustCompile(`rev 20[-0-9 rev]*… \(\d{4} bytes\)`).MatchString(dom) || strings.Contains(dom, strings.Repeat("rev 2024-09 ", 30)) {
		t.Error("a 2,400-byte justification is not cut on the page")
	}
	// Self-contained: a policy that forbids fetching, and nothing to fetch
	// or run.
	raw, _ := os.ReadFile(page)
	if !bytes.Contains(raw, []byte(`<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">`)) {
		t.Error("the page has no Content-Security-Policy forbidding fetches")
	}
	if m := regexp.MustCompile(`<script|\s(src|href|action|srcset|data)=|url\(|@import`).FindString(dom); m != "" {
		t.Errorf("the rendered page references something to load or run: %q", m)
	}

	// A screenshot and a PDF (the page prints) for the audit file, kept as
	// test artifacts.
	dir := artifactDir(t)
	shot, pdf := filepath.Join(dir, "report.png"), filepath.Join(dir, "report.pdf")
	headless(t, browser, page, "--screenshot="+shot)
	headless(t, browser, page, "--print-to-pdf="+pdf, "--no-pdf-header-footer")
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	colours := map[uint32]bool{}
	for y := 0; y < img.Bounds().Dy(); y += 7 {
		for x := 0; x < img.Bounds().Dx(); x += 7 {
			r, g, b, _ := img.At(x, y).RGBA()
			colours[r>>8<<16|g>>8<<8|b>>8] = true
		}
	}
	if img.Bounds().Dx() != 1280 || len(colours) < 8 {
		t.Errorf("screenshot %v with %d colours: not a rendered report", img.Bounds(), len(colours))
	}
	if b, _ := os.ReadFile(pdf); !bytes.HasPrefix(b, []byte("%PDF-")) || len(b) < 10_000 {
		t.Errorf("print to PDF: %d bytes", len(b))
	}
	t.Logf("screenshot %s, PDF %s", shot, pdf)
}

// TestReportOfABrokenLog: a log with checkpoints removed still gets its
// report, which says NOT VERIFIED, marks the gap as missing checkpoints,
// and the command exits 1; bad command lines get one line each.
func TestReportOfABrokenLog(t *testing.T) {
	logFile, pub := reportLog(t)
	b, _ := os.ReadFile(logFile)
	var kept [][]byte
	for _, l := range bytes.SplitAfter(b, []byte("\n")) {
		// The checkpoints of 2026-11-21, 05:30 to 07:30, removed.
		if bytes.Contains(l, []byte(`"type":"checkpoint"`)) && regexp.MustCompile(`"time":"2026-11-21T0[5-7]:30`).Match(l) {
			continue
		}
		kept = append(kept, l)
	}
	cut := filepath.Join(t.TempDir(), "cut.ndjson")
	os.WriteFile(cut, bytes.Join(kept, nil), 0o644)
	page := filepath.Join(t.TempDir(), "report.html")
	var errOut bytes.Buffer
	if code := run([]string{"report", "--html", page, "--pubkey", pub, cut}, io.Discard, &errOut); code != 1 || !strings.Contains(errOut.String(), "NOT verified (the report lists the problems)") {
		t.Errorf("report of a cut log: %d %s", code, errOut.String())
	}
	html, _ := os.ReadFile(page)
	for _, want := range []string{
		`<div class="verdict fail" id="verdict">NOT VERIFIED</div>`,
		`<tr class="problem"><td>2026-11-21T04:30:00Z</td><td>2026-11-21T08:30:00Z</td><td class="n">4h0m0s</td><td>missing</td>`,
		`problem: checkpoints at sizes`,
	} {
		if !bytes.Contains(html, []byte(want)) {
			t.Errorf("the report lacks %q", want)
		}
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"report", logFile}, "report: give --html OUT and at least one PATH"},
		{[]string{"report", "--html", page, "--tz", "Paris", logFile}, `report: --tz "Paris" is not a known time zone`},
		{[]string{"report", "--html", page, "--since", "last week", logFile}, `report: --since "last week": want an RFC 3339 time`},
		{[]string{"report", "--html", page, "--pubkey", logFile, logFile}, "report: --pubkey: line 1 of " + logFile + " is not the checkpoint verifier key"},
	} {
		errOut.Reset()
		if code := run(tc.args, io.Discard, &errOut); code != 2 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%q: exit %d, %q; want %q", tc.args, code, errOut.String(), tc.want)
		}
	}
}

// TestAuditorCommandsReadTheEnvironment: as --help says, every flag of the
// auditor's commands can come from its AUDITPROXY_ variable, and flags may
// follow the paths (verify, prove, show, bundle and report parsed only
// the command line, flags first, before).
func TestAuditorCommandsReadTheEnvironment(t *testing.T) {
	logFile, pub := reportLog(t)
	t.Setenv("AUDITPROXY_PUBKEY", pub)
	for _, args := range [][]string{
		{"verify", logFile},
		{"prove", "--request-id", "req-2", logFile},
		{"show", logFile, "--request-id", "req-2"},
		{"report", logFile, "--html", filepath.Join(t.TempDir(), "r.html")},
	} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 0 {
			t.Errorf("%q with $AUDITPROXY_PUBKEY: exit %d\n%s%s", args, code, out.String(), errOut.String())
		}
	}
	t.Setenv("AUDITPROXY_PUBKEY", logFile) // not a key: the variable is read
	var errOut bytes.Buffer
	if code := run([]string{"verify", logFile}, io.Discard, &errOut); code != 2 || !strings.Contains(errOut.String(), "is not the checkpoint verifier key") {
		t.Errorf("verify with a wrong $AUDITPROXY_PUBKEY: exit %d %s", code, errOut.String())
	}
}

// TestReportCountsRepeatsAsQueryDoes: a copy of an inference whose "time"
// is not an RFC 3339 time (an aggregator's rewrite), read before the
// event itself, is a line that is not an event for both query --stats and
// report; the report took its id as counted, so the event itself was
// dropped as a repeat and the page had one inference fewer than query
// --stats (found by the report review).
func TestReportCountsRepeatsAsQueryDoes(t *testing.T) {
	logFile, pub := reportLog(t)
	b, _ := os.ReadFile(logFile)
	var bad []byte
	for l := range bytes.Lines(b) {
		if bytes.Contains(l, []byte(`"request_id":"req-1"`)) {
			bad = regexp.MustCompile(`"time":"[^"]*"`).ReplaceAll(l, []byte(`"time":"20 Nov 2026 10:05"`))
		}
	}
	copyFile := filepath.Join(t.TempDir(), "copy.ndjson")
	os.WriteFile(copyFile, bad, 0o644)
	var out, errOut bytes.Buffer
	run([]string{"query", "--stats", "--format", "json", copyFile, logFile}, &out, &errOut)
	var stats struct{ Events int64 }
	if err := json.Unmarshal(out.Bytes(), &stats); err != nil || stats.Events != 7 {
		t.Fatalf("query --stats: %d events, %v", stats.Events, err)
	}
	page := filepath.Join(t.TempDir(), "report.html")
	run([]string{"report", "--html", page, "--pubkey", pub, copyFile, logFile}, io.Discard, &errOut)
	html, _ := os.ReadFile(page)
	if m := regexp.MustCompile(`<tr data-key="total"><td class="n" data-figure="events" data-value="(\d+)"`).FindSubmatch(html); m == nil || string(m[1]) != "7" {
		t.Errorf("the report counts %q inference events, query --stats 7", m)
	}
}

// TestReportGapsAsVerifyFindsThem: checkpoints whose signature does not
// verify do not cover a gap: verify skips them and reports the
// checkpoints between as missing, and the page showed the gap covered,
// green, from the forged checkpoints' events (found by the report
// review).
func TestReportGapsAsVerifyFindsThem(t *testing.T) {
	logFile, pub := reportLog(t)
	b, _ := os.ReadFile(logFile)
	var forged []byte
	for l := range bytes.Lines(b) {
		if bytes.Contains(l, []byte(`"type":"checkpoint"`)) && regexp.MustCompile(`"time":"2026-11-21T0[5-7]:30`).Match(l) {
			// Another signature: the same key name and hash, other bytes.
			l = regexp.MustCompile(`(— gpu-node-7 [A-Za-z0-9+/]{8})[A-Za-z0-9+/]{8}`).ReplaceAll(l, []byte("${1}AAAAAAAA"))
		}
		forged = append(forged, l...)
	}
	if bytes.Equal(forged, b) {
		t.Fatal("no checkpoint forged")
	}
	file := filepath.Join(t.TempDir(), "forged.ndjson")
	os.WriteFile(file, forged, 0o644)
	var out, errOut bytes.Buffer
	run([]string{"verify", "--pubkey", pub, file}, &out, &errOut)
	if !strings.Contains(out.String(), "are 4h0m0s apart, cadence 1h0m0s: checkpoints between them are missing") {
		t.Fatalf("verify:\n%s", out.String())
	}
	page := filepath.Join(t.TempDir(), "report.html")
	run([]string{"report", "--html", page, "--pubkey", pub, file}, io.Discard, &errOut)
	html, _ := os.ReadFile(page)
	if want := `<tr class="problem"><td>2026-11-21T04:30:00Z</td><td>2026-11-21T08:30:00Z</td><td class="n">4h0m0s</td><td>missing</td>`; !bytes.Contains(html, []byte(want)) {
		t.Errorf("the report lacks the gap verify reports: %q", want)
	}
}
