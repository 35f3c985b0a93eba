// Command auditproxy is the inference audit sidecar: a reverse proxy in front
// of a vLLM server that writes a hash-attested audit event for every request.
//
// Subcommands:
//
//	auditproxy serve    proxy a real vLLM server
//	auditproxy demo     proxy a built-in simulated vLLM and show its events
//	auditproxy export   print every recorded event, oldest first
//	auditproxy annotate record an operator's change in a running sidecar's log
//	auditproxy checksum print a model directory's manifest and checksum
//	auditproxy keygen   make a checkpoint signing key
//	auditproxy verify   check logs: chains, checkpoints, signatures, completeness
//	auditproxy prove    print an inclusion proof for one request's event
//	auditproxy verify-proof  check such a proof with only the verifier key
//	auditproxy show     one request's whole answer: model version, GPU, vLLM, decrypted bodies as text, proof
//	auditproxy bundle   write one request's evidence for a third party: event, proof, key, bodies, README
//	auditproxy query    select events by time, model, key id, request, outcome, type; --stats
//	auditproxy report   write an HTML audit report: integrity, checkpoint and change timelines, traffic
//	auditproxy keyid    print the api_key_id of an API key read from stdin
//	auditproxy healthcheck  ask a running sidecar whether it is ready (for container HEALTHCHECKs)
//	auditproxy version  print the version
//
// Every flag can also be set as an environment variable AUDITPROXY_<FLAG>,
// upper case with dashes as underscores (AUDITPROXY_DATA_DIR for --data-dir).
// A flag on the command line wins over the environment.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `auditproxy: an audit sidecar for vLLM's OpenAI-compatible server.

Usage:
  auditproxy serve --upstream http://127.0.0.1:8000 [flags]   proxy a vLLM server
  auditproxy demo [flags]                                     proxy a simulated vLLM, print events
  auditproxy export --data-dir DIR                            print recorded events as NDJSON
  auditproxy annotate --type T --actor A --justification J    record an operator's change in the log
  auditproxy checksum [--format sha256sum|json] DIR            a model directory's manifest and checksum
  auditproxy keygen --out FILE [--name NAME]                  make a checkpoint signing key
  auditproxy verify --pubkey FILE.pub PATH...                 verify logs from their events
  auditproxy prove --request-id ID PATH...                    inclusion proof for one request's event
  auditproxy verify-proof --pubkey FILE.pub [PROOF | BUNDLE]  check a proof (or an evidence bundle) without the log
  auditproxy show --request-id ID [--identity F] PATH...      which model, GPU, vLLM answered; what was sent and answered
  auditproxy bundle --request-id ID --pubkey F --out DIR PATH...  one request's evidence for a third party
  auditproxy query [--since T --model M ...] [--stats] PATH... select events, or their statistics
  auditproxy report --html OUT --pubkey FILE.pub PATH...       an audit report to file: integrity, timelines, traffic
  auditproxy keyid --key-id-secret-file FILE < api-key        the api_key_id events record for a key
  auditproxy healthcheck [--admin-listen ADDRESS]             ask a running sidecar whether it is ready
  auditproxy version                                          print the version

Run "auditproxy COMMAND --help" for a command's flags. Every flag can also be
set as AUDITPROXY_<FLAG> (e.g. AUDITPROXY_DATA_DIR); the command line wins.
`

// run executes one command line and returns the process exit code: 0 on
// success, 2 for a usage error, 1 for any other failure.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		err = runServe(rest, stdout, stderr)
	case "demo":
		err = runDemo(rest, stdout, stderr)
	case "export":
		err = runExport(rest, stdout, stderr)
	case "annotate":
		err = runAnnotate(rest, stdout, stderr)
	case "checksum":
		err = runChecksum(rest, stdout, stderr)
	case "keygen":
		err = runKeygen(rest, stdout, stderr)
	case "verify":
		err = runVerify(rest, stdout, stderr)
	case "prove":
		err = runProve(rest, stdout, stderr)
	case "report":
		err = runReport(rest, stdout, stderr)
	case "query":
		err = runQuery(rest, stdout, stderr)
	case "show":
		err = runShow(rest, stdout, stderr)
	case "bundle":
		err = runBundle(rest, stdout, stderr)
	case "verify-proof":
		err = runVerifyProof(rest, stdout, stderr)
	case "keyid":
		err = runKeyID(rest, stdin, stdout, stderr)
	case "healthcheck":
		err = runHealthcheck(rest, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "auditproxy", buildVersion())
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "auditproxy: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(silentError)):
		return 1
	case errors.As(err, new(usageError)):
		fmt.Fprintln(stderr, "auditproxy:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "auditproxy:", err)
		return 1
	}
}

// usageError is a mistake in the command line or the environment.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
