// Package gpu owns NVML: it reads the identity of the GPUs this sidecar's
// vLLM runs on (UUID, name, serial, PCI bus id, MIG mode and MIG devices of
// each visible GPU, plus the driver and CUDA driver versions of the system),
// so that audit events can say which hardware produced an answer.
//
// It is a leaf package: it imports only the standard library and
// github.com/NVIDIA/go-nvml, and it is the only package that talks to NVML.
//
// # NVML
//
// go-nvml needs cgo and dlopens libnvidia-ml.so.1 when the Reader is opened,
// so a binary built with it starts on machines without an NVIDIA driver.
// Link with -ldflags=-extldflags=-Wl,-z,lazy: with immediate binding such a
// binary dies at start on an undefined NVML symbol. A CGO_ENABLED=0 build
// compiles a stub (nocgo.go) with the same API whose Open always fails with
// an error wrapping ErrUnavailable.
//
// # Unavailability
//
// When there is no NVML (no libnvidia-ml.so.1, no GPU, a driver error, or a
// build without cgo) Open returns an error wrapping ErrUnavailable whose text
// is meant to be logged as one warning, e.g.
//
//	gpu: NVML not available: libnvidia-ml.so.1 not found (no NVIDIA driver on this machine)
//
// and the caller records "gpu": null.
//
// # Which GPUs
//
// The GPUs read are, in order of precedence: the explicit list the caller
// passes to Open (e.g. a --gpus flag), CUDA_VISIBLE_DEVICES,
// NVIDIA_VISIBLE_DEVICES, and otherwise every GPU NVML sees. See
// ParseVisible for the accepted values and Open for how they map to devices.
package gpu

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
)

// Identity is what the audit event records about the GPUs. Field names and
// order are part of the event schema: only ever add fields.
type Identity struct {
	// DriverVersion is the NVIDIA driver version, e.g. "550.54.15".
	DriverVersion string `json:"driver_version"`
	// CUDADriverVersion is the highest CUDA version the driver supports,
	// formatted "major.minor", e.g. "12.4".
	CUDADriverVersion string `json:"cuda_driver_version"`
	// Devices are the selected GPUs, in selection order (NVML index order
	// when every GPU is selected). Never nil in an Identity from Read: an
	// empty selection ("none") marshals as [].
	Devices []Device `json:"devices"`
}

// Device is one physical GPU.
type Device struct {
	// Index is the NVML index of the GPU as this process sees it (PCI bus
	// order; inside a container, among the GPUs the container runtime
	// exposed).
	Index int `json:"index"`
	// UUID is the GPU UUID, "GPU-…".
	UUID string `json:"uuid"`
	// Name is the product name, e.g. "NVIDIA H100 80GB HBM3".
	Name string `json:"name"`
	// Serial is the board serial number; "" where the board has none
	// (GeForce and some virtualised GPUs answer NOT_SUPPORTED).
	Serial string `json:"serial"`
	// PCIBusID is the PCI address as NVML reports it, e.g. "00000000:3B:00.0".
	PCIBusID string `json:"pci_bus_id"`
	// MIGMode is the current MIG mode: "enabled", "disabled", or
	// "unsupported" where the GPU has no MIG.
	MIGMode string `json:"mig_mode"`
	// MIGDevices are the UUIDs ("MIG-…") of the MIG devices: all of them when
	// the GPU was selected, or only those selected when the selection named
	// MIG devices. Empty unless MIGMode is "enabled".
	MIGDevices []string `json:"mig_devices,omitempty"`
}

// MIG modes as recorded in Device.MIGMode.
const (
	MIGEnabled     = "enabled"
	MIGDisabled    = "disabled"
	MIGUnsupported = "unsupported"
)

// Digest returns "sha256:<hex>" of id's canonical JSON (encoding/json of the
// struct, as it appears in events): a compact reference an event can carry
// instead of the whole identity. Equal identities have equal digests; any
// change of a recorded field changes it. Digest of a nil Identity is "".
func (id *Identity) Digest() string {
	if id == nil {
		return ""
	}
	// Marshalling strings, ints and slices of them cannot fail.
	b, _ := json.Marshal(id)
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ErrUnavailable is wrapped by every error that means "there is no NVML to
// read": no libnvidia-ml.so.1, no GPU, a driver error at initialisation, or a
// build without cgo. The caller logs the error once and records "gpu": null.
var ErrUnavailable = errors.New("gpu: NVML not available")

// unavailableError reads "gpu: NVML not available: <reason>" and wraps
// ErrUnavailable and, where there is one, the NVML return code (an
// nvml.Return, so errors.Is(err, nvml.ERROR_LIBRARY_NOT_FOUND) works).
type unavailableError struct {
	reason string
	cause  error
}

func (e *unavailableError) Error() string { return ErrUnavailable.Error() + ": " + e.reason }

func (e *unavailableError) Unwrap() []error {
	if e.cause == nil {
		return []error{ErrUnavailable}
	}
	return []error{ErrUnavailable, e.cause}
}
