#!/usr/bin/env bash
# Writes the auditor guide (default docs/auditor-guide.md) from a real run, so
# that every output it shows is what the current binary prints:
#
#   1. builds auditproxy, makes a checkpoint signing key and an auditor's age
#      key, and starts `auditproxy demo` (a simulated vLLM behind the proxy)
#      with payload capture encrypted to the auditor's key;
#   2. sends requests as two API keys and records an operator's change,
#      signed with ssh-keygen by who made it and who approved it;
#   3. stops the demo (Ctrl-C) and runs each command of the guide on its
#      spool, pasting the command and its output.
#
# Usage: docs/auditor-guide.sh [OUTPUT]   (from anywhere; needs go, curl and ssh-keygen)
# CI runs it into a temporary file (TestAuditorGuideScript) so it cannot rot.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/docs/auditor-guide.md}
work=$(mktemp -d)
demo_pid=
cleanup() {
  if [ -n "$demo_pid" ]; then kill "$demo_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cd "$repo"
go build -o "$work/auditproxy" ./cmd/auditproxy
recipient=$("$work/auditproxy" keygen --age --out "$work/auditor.agekey")

# The guide shows paths as an auditor would have them: the exported spool in
# ./evidence, the keys beside it. Commands run in $work.
cd "$work"
mkdir evidence
ap() { "$work/auditproxy" "$@"; }
ap keygen --name gpu-node-7 --out signing.key >/dev/null
# A stand-in for the model's weights directory: the sidecar records its
# manifest checksum in every event, as it would for real weights.
mkdir -p models/Llama-3.1-8B-Instruct
printf '{"architectures":["LlamaForCausalLM"],"num_hidden_layers":32}\n' >models/Llama-3.1-8B-Instruct/config.json
head -c 65536 /dev/zero | tr '\0' 'w' >models/Llama-3.1-8B-Instruct/model-00001-of-00001.safetensors
# The platform team's SSH keys, and the allowed-signers file that says whose
# they are (kept by the operator; auditors get a copy).
for who in alice carol; do ssh-keygen -q -t ed25519 -N '' -C "$who@example.com" -f "$who.id_ed25519"; done
for who in alice carol; do echo "$who@example.com $(cut -d' ' -f1,2 "$who.id_ed25519.pub")"; done >allowed_signers

"$work/auditproxy" demo --data-dir data --signing-key signing.key --log-name gpu-node-7 \
  --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
  --model-dir meta-llama/Llama-3.1-8B-Instruct=models/Llama-3.1-8B-Instruct \
  --capture-payloads --payload-recipient "$recipient" --checkpoint-interval 2s \
  --allowed-signers allowed_signers --require-signed-annotations --approval-required model_rollout \
  --change-outcome-window 2s >demo.out 2>&1 &
demo_pid=$!
for _ in $(seq 1 300); do
  grep -q 'keeps serving until Ctrl-C' demo.out && break
  kill -0 "$demo_pid" 2>/dev/null || { cat demo.out >&2; exit 1; }
  sleep 0.1
done
grep -q 'keeps serving until Ctrl-C' demo.out || { echo "demo did not start" >&2; cat demo.out >&2; exit 1; }
proxy=$(grep -o 'proxy at http://[0-9.:]*' demo.out | head -1 | cut -d' ' -f3)
admin=$(grep -o 'curl -s http://[0-9.:]*/metrics' demo.out | head -1 | cut -d' ' -f3 | sed 's|/metrics||')

alice_key=sk-alice-5f1e0c2b9d
bob_key=sk-bob-77a3e10f42
model=meta-llama/Llama-3.1-8B-Instruct
ask() { # ask KEY STREAM CONTENT: prints the X-Request-Id
  curl -sS -o /dev/null -D - "$proxy/v1/chat/completions" \
    -H "Authorization: Bearer $1" -H 'Content-Type: application/json' \
    -d "{\"model\":\"$model\",\"stream\":$2,\"messages\":[{\"role\":\"user\",\"content\":\"$3\"}]}" |
    tr -d '\r' | sed -n 's/^[Xx]-[Rr]equest-[Ii]d: //p'
}
r1=$(ask "$alice_key" false "What is the refund policy for order 1182?")
ask "$bob_key" true "Summarise this contract clause." >/dev/null
r3=$(ask "$alice_key" true "Draft a reply to the customer.")
ap annotate prepare --type model_rollout --resource gpu-node-7/Llama-3.1-8B-Instruct \
  --actor alice@example.com --approver carol@example.com --ticket CHG-2291 --mode planned \
  --justification "Roll out Llama-3.1-8B-Instruct weights rev 2024-09 to gpu-node-7" \
  --before '{"weights":"rev 2024-07"}' --after '{"weights":"rev 2024-09"}' --out change.json 2>/dev/null
ssh-keygen -q -Y sign -n auditproxy-change -f alice.id_ed25519 change.json && mv change.json.sig alice.sig
ssh-keygen -q -Y sign -n auditproxy-change -f carol.id_ed25519 change.json && mv change.json.sig carol.sig
ap annotate submit --record change.json --signature alice.sig --signature carol.sig \
  --admin "$admin" --token-file data/admin.token >/dev/null
ask "$bob_key" false "Classify this support ticket." >/dev/null
sleep 2.5 # one more checkpoint interval, and the change's outcome window
kill -INT "$demo_pid"
wait "$demo_pid" || { echo "demo exited with an error" >&2; cat demo.out >&2; exit 1; }
demo_pid=
cp -r data/spool/. evidence/
rm -rf data/spool
cp data/key-id.secret key-id.secret

# run CMD...: a shell block with the command and its output. An event is one
# long line (a captured payload alone is a few KB of base64): lines are cut at
# 1,500 characters, and the cut is marked.
run() {
  printf '```console\n$ %s\n' "$*"
  (eval "$@") 2>&1 | awk '{ if (length($0) > 1500) print substr($0, 1, 1500) " [... " length($0) - 1500 " more characters]"; else print }'
  printf '```\n'
}
# Dates in the guide: the window the demo ran in.
since=$(date -u -d '-10 minutes' +%Y-%m-%dT%H:%M:%SZ)

{
cat <<EOF
# Auditor guide

How to answer an auditor's questions about the inferences a vLLM server ran, with the same
\`auditproxy\` binary the sidecars run. Every output below is real: \`docs/auditor-guide.sh\` produced
this page from a run of \`auditproxy demo\` (a simulated vLLM behind the proxy) on $(date -u +%Y-%m-%d),
and CI runs that script so the commands cannot drift from the binary.

What you need:

- **The events**, as NDJSON or as spool files: the copy in the S3 bucket with Object Lock
  (\`deploy/fluent-bit/README.md\`), an export from the aggregator, or a sidecar's spool directory. Here
  they are in \`./evidence\`.
- **The verifier key** of each sidecar's checkpoint signing key (\`signing.key.pub\`), given to you by the
  operator when the sidecar was deployed, and kept apart from the logs.
- To find the requests of one API key: the key itself and the sidecars' **key-id secret**
  (\`key-id.secret\`, held by the operator). Events never contain keys.
- To read what was sent and answered: the **age identity** whose public key the sidecars encrypted
  captured bodies to (\`--capture-payloads --payload-recipient\`). The sidecars cannot decrypt them.

## First: is the log complete and unaltered?

\`verify\` rebuilds each log (one per sidecar and epoch, its *origin*) from the events, checks every
signed checkpoint against the verifier key, checks that no event is missing between the first and the
newest checkpoint, and that no event was changed. Run it before answering anything from the log.

EOF
run ap verify --pubkey signing.key.pub evidence
cat <<EOF

Give \`--until\` the time the export was made: a newest checkpoint much older than that means the tail
of the log was cut off. \`--json\` prints the report for a ticket.

Events after a log's newest checkpoint, if any, are listed as \`uncommitted\`: no signature covers them
yet, so anyone with write access to the copy could have appended them. On evidence from a stopped
sidecar, or to rely on every event, add \`--require-committed\`, which fails on them. Records exported
from OpenSearch carry an \`@timestamp\` the aggregator added: \`--ignore-member @timestamp\` drops it
before hashing (the README's table lists what each aggregator output adds).

## All inferences by API key X

The events record \`api_key_id\`, a keyed hash of the key. \`keyid\` computes it from the key (read from
standard input, so it stays out of shell history) and the key-id secret:

EOF
alice_id=$(printf '%s\n' "$alice_key" | ap keyid --key-id-secret-file key-id.secret)
export ALICE_KEY=$alice_key
run "printf '%s\n' \"\$ALICE_KEY\" | ap keyid --key-id-secret-file key-id.secret"
cat <<EOF

Then select that key's events, or summarise them:

EOF
run ap query --api-key-id "$alice_id" --stats evidence
echo
run ap query --api-key-id "$alice_id" evidence
cat <<EOF

\`--since\` and \`--until\` take RFC 3339 times, dates (\`2026-12-04\`, from its start in UTC or in
\`--tz\`) or spans before now (\`90m\`, \`30d\`, \`8mo\`); \`--model\`, \`--outcome\` and
\`--request-id\` narrow further, and each can be repeated.

## Error rates and latency, per key, model version, day

\`--stats\` counts errors (the upstream failed), client give-ups and the sidecar's own refusals apart,
and gives the latency of the successful requests only. \`--by\` splits the same figures by \`key\`,
\`model\` (name and weights checksum), \`outcome\`, \`hour\` or \`day\` (every one of the window,
those without traffic too, cut on the \`--tz\` clock); \`--format csv\` or \`json\` for a spreadsheet
or a ticket:

EOF
run ap query --stats --by key,day --tz Europe/Paris evidence
echo
run ap query --stats --by model --format csv evidence
cat <<EOF

## Which model version and which GPU processed request R

Clients see the request id in the \`X-Request-Id\` response header (or sent their own). The event says
which weights answered (\`model.checksum\`: the checksum of the model directory's manifest, which
\`auditproxy checksum DIR\` recomputes from the files) and on which GPU (\`gpu\`: NVML's UUID, serial,
name and driver; \`null\` here, as the demo runs on a machine without an NVIDIA driver):

EOF
run ap query --request-id "$r1" evidence
cat <<EOF

The operator, or anyone holding the weights, recomputes that checksum from the files:

EOF
run ap checksum models/Llama-3.1-8B-Instruct
cat <<EOF

To show a third party that this event is in the signed log without handing over the log, make an
inclusion proof and let them check it with only the verifier key:

EOF
run ap prove --request-id "$r1" evidence '>' proof.txt
run ap verify-proof --pubkey signing.key.pub proof.txt
cat <<EOF

To hand the proof to someone with nothing else, write it as one C2SP tlog-proof file
(https://c2sp.org/tlog-proof): the event (base64, in its \`extra\` line), its index, the inclusion proof
and the signed checkpoint. With \`--cosignatures DATA-DIR/cosignatures.ndjson\` the proof is made
against the newest checkpoint a witness cosigned and carries its cosignatures, which
\`verify-proof --witness-key\` requires:

EOF
run ap prove --request-id "$r1" --format tlog-proof evidence '>' "$r1.tlog-proof"
cat <<EOF

Its lines after the first two (the header and the event): the index, the proof's hashes, an empty line,
the checkpoint and its signature:

EOF
run tail -n +3 "$r1.tlog-proof"
echo
run ap verify-proof --pubkey signing.key.pub "$r1.tlog-proof"
ap query --type checkpoint evidence | head -1 >kept.checkpoint
cat <<EOF

## Does today's log extend a checkpoint you kept?

A checkpoint kept from an earlier audit (a line of the checkpoint directory's \`checkpoints.ndjson\`, or
its signed note) pins the log as it was then. A consistency proof shows that today's log extends it,
every event it signed unchanged, with O(log n) hashes; the third party checks it with the two signed
checkpoints and the verifier key, without the log. Here \`kept.checkpoint\` is the log's first
checkpoint; \`--new-checkpoint FILE\` proves to another checkpoint than the newest:

EOF
run ap prove --old-checkpoint kept.checkpoint evidence '>' consistency.json
run ap verify-proof --pubkey signing.key.pub consistency.json
cat <<EOF

## A report for the audit file

\`report\` verifies the logs as \`verify\` does and writes one HTML page to attach to the audit file:
the verdict and each log's completeness (the events its checkpoints commit to against those present)
and signatures; the checkpoint timeline with its gaps (the sidecar stopped, an outage it reported, or
checkpoints missing); the change timeline, with who made and approved each change record; and volume,
error rate, latency and tokens per day, API key id, model version and outcome, the very figures of
\`query --stats --by day,key,model,outcome --format json\` for the same window. The page loads nothing
from the network and runs no script, so it reads the same offline and prints; it ends with the commands
that recompute it. The exit status is 1 when the logs do not verify, and the page is written anyway:

EOF
run ap report --html report.html --pubkey signing.key.pub --allowed-signers allowed_signers --tz Europe/Paris evidence
cat <<EOF

## All changes in a window

Changes of the serving stack are events of their own: \`model_changed\` (other weights behind a served
name), \`gpu_changed\`, \`upstream_version\` (vLLM's version), \`proxy_started\` / \`proxy_stopped\`, and
\`annotation\` for an operator's change (its change record: resource, before and after, planned or
emergency, ticket, why, signed by who made it and who approved it). A span in which the sidecar could not identify the served model (vLLM refused or did not answer
its \`/v1/models\`, so events carry no model checksum) lies between \`model_identity_unavailable\` (with
the reason) and \`model_identity_restored\`:

EOF
run ap query --since "$since" --type annotation --type model_changed --type gpu_changed --type upstream_version --type proxy_started --type proxy_stopped evidence
cat <<EOF

## Who changed this deployment, who approved it, and did it help?

Each change of one resource, with its approvals and its outcome: the \`annotation\` holds the record as
its actor and approver signed it (with \`ssh-keygen -Y sign\`), and the \`change_outcome\` the sidecar
wrote a window (\`--change-outcome-window\`) later compares the requests it recorded before and after
the change: counts, error rate, latency and TTFT p50/p99.

EOF
run ap query --resource gpu-node-7/Llama-3.1-8B-Instruct evidence
cat <<EOF

The signatures prove who made and who approved the change only if they are checked against who may
sign. With the operator's allowed-signers file (OpenSSH's format: an identity and a public SSH key per
line), \`verify\` checks each change record again: that each signature verifies over the record as it
is in the log, that the signer is allowed for the actor or approver the record names, and that a change
the sidecar's policy required approval for has an approver other than its actor:

EOF
run ap verify --pubkey signing.key.pub --allowed-signers allowed_signers evidence
cat <<EOF

The same check with OpenSSH alone, for one signature: the record is the \`record\` member of the
event's \`details\` (its canonical JSON, exactly as signed), the signature its \`sshsig\`:

\`\`\`sh
ssh-keygen -Y verify -f allowed_signers -I alice@example.com -n auditproxy-change -s alice.sig < change.json
\`\`\`

## Reconstruct request R from eight months ago

With payload capture on, each event carries the request and response bodies encrypted to the auditors'
age keys. \`show\` is the whole answer: which weights answered (the checksum, and the \`model_changed\`
rollout and signed change record in effect then), on which GPUs (here unknown: the demo runs without
NVML) and vLLM version, for which API key, tokens and latency; it decrypts the bodies, checks them
against the digests the event recorded when the request ran, prints them as readable text, and with
\`--pubkey\` also proves the event is in the signed log:

EOF
run ap show --request-id "$r1" --identity auditor.agekey --pubkey signing.key.pub evidence
cat <<EOF

The change record above names the deployment (\`gpu-node-7/Llama-3.1-8B-Instruct\`) as its resource;
\`show\` takes a record to be about the model only when its resource is the model's served name, so it
says none is recorded. A streamed answer is re-assembled from its Server-Sent Events into the text the
client saw, per choice; \`--raw\` prints the frames as sent, \`--out-dir\` writes the exact bytes and the
text, \`--json\` prints all of it as one object. Anything from a client or a model is escaped before it
reaches the terminal. The end of the streamed request's \`show\`:

EOF
run ap show --request-id "$r3" --identity auditor.agekey evidence '|' sed -n "'/^--- request/,\$p'"
cat <<EOF

Without capture, the event still holds the SHA-256 or BLAKE3 digest of both bodies: bodies kept
elsewhere (by the application) can be checked against it with \`sha256sum\` or \`b3sum\`.

## Hand the evidence for request R to a third party

\`bundle\` writes one directory that someone without the log can check with the auditproxy binary alone,
or with standard tools: the event, its C2SP tlog-proof, the log's public key, the decrypted bodies
(with \`--identity\`; without it none) and a README.txt that says what each file is and how to check it:

EOF
run ap bundle --request-id "$r1" --pubkey signing.key.pub --identity auditor.agekey --out "bundle-$r1" evidence
run sed -n "'/^HOW TO CHECK/,\$p'" "bundle-$r1/README.txt"
run ap verify-proof --pubkey "bundle-$r1/log.pub" "bundle-$r1"
run "(cd bundle-$r1 && sha256sum request.body response.body)"
cat <<EOF

EOF
} >"$work/guide.md"

# The guide calls the binary auditproxy and shows no temporary paths.
sed -e "s/^\$ ap /\$ auditproxy /" -e "s/| ap /| auditproxy /" -e "s|$work/||g" -e "s|$work|.|g" "$work/guide.md" >"$out"
echo "wrote $out"
