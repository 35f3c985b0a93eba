package audit

// Event types: the value of every event's "type" member. Each event has the
// members "v", "type", "id", "time" and "source"; what else it holds is said
// below. All are written to the same log, so that "what changed during the
// incident window" has an answer with the same proofs as the inferences.
const (
	// TypeInference is one proxied request and its answer (Event).
	TypeInference = "inference"

	// The log's own events (package auditlog).

	// TypeLogStarted is the first event of every epoch of a log:
	// "log_started":{"reason":…,"previous_checkpoint":{…}|null,"lost":[…],"committed_lost":…}.
	TypeLogStarted = "log_started"
	// TypeCheckpoint is a signed checkpoint of the log up to the event
	// before it: "checkpoint":{"note":…,"interval_s":…,"final":…}.
	TypeCheckpoint = "checkpoint"

	// The spool's (package spool).

	// TypeSegmentDamaged: the spool quarantined a damaged segment,
	// "details":{"segment":…,"saved_to":…,"records_kept":N,"damaged":[…]}. Each
	// damaged range says its offsets (uncompressed; end -1: the rest of a
	// compressed stream that cannot be decoded), the intact events around it
	// and, when both are in one origin, the seqs missing between them.
	TypeSegmentDamaged = "segment_damaged"

	// The sidecar's (NewOpsEvent).

	TypeProxyStarted = "proxy_started" // details: version, config digest, GPU reference
	TypeProxyStopped = "proxy_stopped" // details: reason, events recorded
	TypeGPUIdentity  = "gpu_identity"  // details: digest, identity (at start)
	TypeGPUChanged   = "gpu_changed"   // details: before, after (digests and identities)

	// What the upstream serves (package identity).

	// TypeModelChanged: a served model's weights first seen or changed
	// (before and after).
	TypeModelChanged = "model_changed"
	// TypeUpstreamVersion: the upstream's version (vLLM's /version) first
	// seen or changed.
	TypeUpstreamVersion = "upstream_version"
	// TypeModelLoaded and TypeModelUnloaded: a LoRA adapter loaded or
	// unloaded through the proxy.
	TypeModelLoaded   = "model_loaded"
	TypeModelUnloaded = "model_unloaded"
	// TypeModelIdentityUnavailable and TypeModelIdentityRestored: the
	// models poller cannot read what the upstream serves, and can again.
	TypeModelIdentityUnavailable = "model_identity_unavailable"
	TypeModelIdentityRestored    = "model_identity_restored"

	// TypeAnnotation is what an operator records about an external change
	// (a rollout, a GPU tier change, an incident action): a change record
	// signed by its actor and approver, or an unsigned annotation
	// (package change).
	TypeAnnotation = "annotation"
	// TypeChangeOutcome: the requests of a window before and a window
	// after a change (model_changed, gpu_changed, an annotation) as the
	// sidecar recorded them: counts, error rate, latency and TTFT
	// percentiles (package change).
	TypeChangeOutcome = "change_outcome"
)

// Types are the event types the sidecar writes, every one of the Type
// constants: a filter on another type (a typo) selects nothing.
var Types = []string{
	TypeInference, TypeLogStarted, TypeCheckpoint, TypeSegmentDamaged,
	TypeProxyStarted, TypeProxyStopped, TypeGPUIdentity, TypeGPUChanged,
	TypeModelChanged, TypeUpstreamVersion, TypeModelLoaded, TypeModelUnloaded,
	TypeModelIdentityUnavailable, TypeModelIdentityRestored, TypeAnnotation, TypeChangeOutcome,
}

// Members are the top-level member names of the events of every type, the
// log's own ("log", "checkpoint", "log_started") included. Anything else at
// the top level of a stored record was added after the sidecar wrote it (an
// aggregator's "@timestamp", "tag" or "date"), and is not part of the event
// its log hashed; an aggregator member of one of these names would have
// replaced the event's own.
var Members = []string{
	"v", "type", "id", "time", "request_id", "method", "path", "stream", "model", "gpu", "input", "output",
	"api_key_id", "latency_ms", "status", "source", "payload", "details", "log", "checkpoint", "log_started",
}
