//go:build cgo

package gpu

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Reader reads the Identity of the selected GPUs through NVML. It is safe
// for concurrent use; Reads are serialised.
type Reader struct {
	mu     sync.Mutex
	lib    nvml.Interface // nil once closed
	sel    Selection
	source string // where sel came from, for error messages
}

var errClosed = errors.New("gpu: Read on a closed Reader")

// Open initialises NVML (dlopen of libnvidia-ml.so.1 and nvmlInit) and
// returns a Reader for the selected GPUs.
//
// visible is the caller's explicit GPU list (e.g. from a --gpus flag); its
// elements are entries as ParseVisible accepts, or comma-separated lists of
// them. When it is nil, empty, or names nothing ("" or "void"), the
// selection comes from CUDA_VISIBLE_DEVICES, then NVIDIA_VISIBLE_DEVICES,
// then is every GPU.
//
// Indexes are NVML indexes, which follow PCI bus order. CUDA numbers GPUs
// fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID; the two agree on
// machines with identical GPUs. Select by UUID where they may not.
// NVIDIA_VISIBLE_DEVICES is consumed by the container runtime, which exposes
// only those GPUs and renumbers them from 0: when it holds indexes and names
// exactly as many GPUs as NVML sees, it is taken as already applied and every
// GPU is selected; otherwise its indexes are read as NVML indexes.
//
// Open fails with an error wrapping ErrUnavailable (and the nvml.Return)
// when NVML cannot be loaded or initialised, or sees no GPU while the
// selection is not "none". It fails with an error naming the entry when the
// selection does not parse or names a device that does not exist; NVML is
// then shut down again. Call Close when done.
func Open(visible []string) (*Reader, error) {
	return newReader(nvml.New(), visible)
}

// newReader is Open with the NVML implementation given, for tests with
// go-nvml's mocks. It calls lib.Init.
func newReader(lib nvml.Interface, visible []string) (*Reader, error) {
	sel, source, err := chooseSelection(visible)
	if err != nil {
		return nil, err
	}
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return nil, initError(ret)
	}
	r := &Reader{lib: lib, sel: sel, source: source}
	count, ret := lib.DeviceGetCount()
	switch {
	case ret != nvml.SUCCESS:
		err = &unavailableError{reason: "nvmlDeviceGetCount: " + ret.Error(), cause: ret}
	case count == 0 && sel.Kind != SelectNone:
		err = &unavailableError{reason: "no NVIDIA GPU found (NVML sees 0 devices)"}
	default:
		// Fail fast on a selection naming devices that do not exist.
		_, err = r.resolve()
	}
	if err != nil {
		lib.Shutdown()
		return nil, err
	}
	return r, nil
}

// initError turns a failed nvml.Init into an error wrapping ErrUnavailable
// with a message an operator can act on.
func initError(ret nvml.Return) error {
	var reason string
	switch ret {
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		reason = "libnvidia-ml.so.1 not found (no NVIDIA driver on this machine)"
	case nvml.ERROR_DRIVER_NOT_LOADED:
		reason = "NVIDIA kernel driver not loaded"
	case nvml.ERROR_NO_PERMISSION:
		reason = "no permission to talk to the NVIDIA driver (check access to /dev/nvidia*)"
	case nvml.ERROR_LIB_RM_VERSION_MISMATCH:
		reason = "libnvidia-ml.so.1 does not match the loaded NVIDIA kernel driver (driver updated without reboot, or a container with another driver's libraries)"
	default:
		reason = "nvmlInit: " + ret.Error()
	}
	return &unavailableError{reason: reason, cause: ret}
}

// Close shuts NVML down (nvmlShutdown). Further Reads fail; Close again is
// a no-op.
func (r *Reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lib == nil {
		return nil
	}
	lib := r.lib
	r.lib = nil
	if ret := lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("gpu: nvmlShutdown: %w", ret)
	}
	return nil
}

// Read reads the identity of the selected GPUs now. The selection is
// resolved against the GPUs NVML sees at each call, so periodic Reads notice
// a GPU replaced, MIG reconfigured, or a driver updated (compare Digests).
//
// A GPU without a serial number has Serial "" and one without MIG has
// MIGMode "unsupported"; any other NVML failure fails the Read with an error
// naming the GPU and the NVML call and wrapping the nvml.Return.
func (r *Reader) Read() (*Identity, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lib == nil {
		return nil, errClosed
	}
	driver, ret := r.lib.SystemGetDriverVersion()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("gpu: nvmlSystemGetDriverVersion: %w", ret)
	}
	cuda, ret := r.lib.SystemGetCudaDriverVersion_v2()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("gpu: nvmlSystemGetCudaDriverVersion_v2: %w", ret)
	}
	targets, err := r.resolve()
	if err != nil {
		return nil, err
	}
	id := &Identity{
		DriverVersion:     driver,
		CUDADriverVersion: cudaVersion(cuda),
		Devices:           make([]Device, 0, len(targets)),
	}
	for _, t := range targets {
		d, err := readDevice(t)
		if err != nil {
			return nil, err
		}
		id.Devices = append(id.Devices, d)
	}
	return id, nil
}

// cudaVersion formats NVML's CUDA version integer (1000*major + 10*minor)
// as "major.minor": 12040 -> "12.4".
func cudaVersion(v int) string {
	if v <= 0 {
		return ""
	}
	return strconv.Itoa(v/1000) + "." + strconv.Itoa(v%1000/10)
}

// target is one GPU to read.
type target struct {
	index int
	dev   nvml.Device
	// migs, when not nil, are the MIG device UUIDs the selection named on
	// this GPU; nil means the GPU itself was selected (all its MIG devices).
	migs []string
}

// gpuInfo is a GPU NVML sees, for matching selection entries.
type gpuInfo struct {
	dev  nvml.Device
	uuid string
	migs []string // MIG device UUIDs; filled only when a MIG entry needs them
}

// resolve maps the selection onto the GPUs NVML sees now.
func (r *Reader) resolve() ([]target, error) {
	if r.sel.Kind == SelectNone {
		return nil, nil
	}
	count, ret := r.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("gpu: nvmlDeviceGetCount: %w", ret)
	}
	if r.sel.Kind != SelectList || r.appliedByRuntime(count) {
		targets := make([]target, count)
		for i := range count {
			dev, err := r.handle(i)
			if err != nil {
				return nil, err
			}
			targets[i] = target{index: i, dev: dev}
		}
		return targets, nil
	}

	var gpus []gpuInfo // all GPUs, loaded on the first UUID entry
	var migsLoaded bool
	load := func(withMIG bool) error {
		if gpus == nil {
			gpus = make([]gpuInfo, count)
			for i := range count {
				dev, err := r.handle(i)
				if err != nil {
					return err
				}
				uuid, ret := dev.GetUUID()
				if ret != nvml.SUCCESS {
					return deviceError(i, "", "nvmlDeviceGetUUID", ret)
				}
				gpus[i] = gpuInfo{dev: dev, uuid: uuid}
			}
		}
		if withMIG && !migsLoaded {
			for i := range gpus {
				mode, err := migMode(i, gpus[i].uuid, gpus[i].dev)
				if err != nil {
					return err
				}
				if mode == MIGEnabled {
					if gpus[i].migs, err = migDevices(i, gpus[i].uuid, gpus[i].dev); err != nil {
						return err
					}
				}
			}
			migsLoaded = true
		}
		return nil
	}

	var targets []target
	at := make(map[int]int) // GPU index -> position in targets
	add := func(i int, dev nvml.Device, mig string) {
		pos, ok := at[i]
		if !ok {
			at[i] = len(targets)
			t := target{index: i, dev: dev}
			if mig != "" {
				t.migs = []string{mig}
			}
			targets = append(targets, t)
			return
		}
		t := &targets[pos]
		switch {
		case mig == "":
			t.migs = nil // the whole GPU
		case t.migs != nil && !contains(t.migs, mig):
			t.migs = append(t.migs, mig)
		}
	}
	for _, e := range r.sel.Entries {
		switch {
		case e.UUID == "":
			if e.Index >= count {
				return nil, fmt.Errorf("gpu: %s entry %q: no GPU with index %d (NVML sees %d, indexes 0-%d)",
					r.source, e, e.Index, count, count-1)
			}
			dev, err := r.handle(e.Index)
			if err != nil {
				return nil, err
			}
			add(e.Index, dev, "")
		case e.isMIG():
			if err := load(true); err != nil {
				return nil, err
			}
			var cands []string
			var owner []int
			for i, g := range gpus {
				for _, m := range g.migs {
					cands = append(cands, m)
					owner = append(owner, i)
				}
			}
			k, err := match(e.UUID, cands)
			if err != nil {
				return nil, fmt.Errorf("gpu: %s entry %q: %s among the %d MIG devices NVML sees", r.source, e, err, len(cands))
			}
			add(owner[k], gpus[owner[k]].dev, cands[k])
		default:
			if err := load(false); err != nil {
				return nil, err
			}
			cands := make([]string, len(gpus))
			for i, g := range gpus {
				cands[i] = g.uuid
			}
			k, err := match(e.UUID, cands)
			if err != nil {
				return nil, fmt.Errorf("gpu: %s entry %q: %s among the %d GPUs NVML sees", r.source, e, err, count)
			}
			add(k, gpus[k].dev, "")
		}
	}
	return targets, nil
}

// appliedByRuntime reports whether an NVIDIA_VISIBLE_DEVICES index list has
// already been applied by the container runtime: it names exactly as many
// GPUs as NVML sees.
func (r *Reader) appliedByRuntime(count int) bool {
	if r.source != srcNVIDIA || len(r.sel.Entries) != count {
		return false
	}
	for _, e := range r.sel.Entries {
		if e.UUID == "" {
			return true
		}
	}
	return false
}

func (r *Reader) handle(i int) (nvml.Device, error) {
	dev, ret := r.lib.DeviceGetHandleByIndex(i)
	if ret != nvml.SUCCESS {
		return nil, deviceError(i, "", "nvmlDeviceGetHandleByIndex", ret)
	}
	return dev, nil
}

// match returns the position of the UUID in cands equal to id or, failing
// that, the only one id is a prefix of.
func match(id string, cands []string) (int, error) {
	found := -1
	for i, c := range cands {
		if c == id {
			return i, nil
		}
		if strings.HasPrefix(c, id) {
			if found >= 0 {
				return 0, fmt.Errorf("ambiguous: prefix of %s and %s", cands[found], c)
			}
			found = i
		}
	}
	if found < 0 {
		return 0, fmt.Errorf("no such device")
	}
	return found, nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func deviceError(index int, uuid, call string, ret nvml.Return) error {
	if uuid != "" {
		return fmt.Errorf("gpu: GPU %d (%s): %s: %w", index, uuid, call, ret)
	}
	return fmt.Errorf("gpu: GPU %d: %s: %w", index, call, ret)
}

func readDevice(t target) (Device, error) {
	d := Device{Index: t.index}
	var ret nvml.Return
	if d.UUID, ret = t.dev.GetUUID(); ret != nvml.SUCCESS {
		return Device{}, deviceError(t.index, "", "nvmlDeviceGetUUID", ret)
	}
	if d.Name, ret = t.dev.GetName(); ret != nvml.SUCCESS {
		return Device{}, deviceError(t.index, d.UUID, "nvmlDeviceGetName", ret)
	}
	switch d.Serial, ret = t.dev.GetSerial(); ret {
	case nvml.SUCCESS:
	case nvml.ERROR_NOT_SUPPORTED:
		d.Serial = ""
	default:
		return Device{}, deviceError(t.index, d.UUID, "nvmlDeviceGetSerial", ret)
	}
	pci, ret := t.dev.GetPciInfo()
	if ret != nvml.SUCCESS {
		return Device{}, deviceError(t.index, d.UUID, "nvmlDeviceGetPciInfo", ret)
	}
	d.PCIBusID = cString(pci.BusId[:])
	var err error
	if d.MIGMode, err = migMode(t.index, d.UUID, t.dev); err != nil {
		return Device{}, err
	}
	if d.MIGMode == MIGEnabled {
		if t.migs != nil {
			d.MIGDevices = append([]string(nil), t.migs...)
		} else if d.MIGDevices, err = migDevices(t.index, d.UUID, t.dev); err != nil {
			return Device{}, err
		}
	}
	return d, nil
}

// migMode returns the current MIG mode of a GPU as recorded in Device.MIGMode.
func migMode(index int, uuid string, dev nvml.Device) (string, error) {
	current, _, ret := dev.GetMigMode()
	switch {
	case ret == nvml.ERROR_NOT_SUPPORTED:
		return MIGUnsupported, nil
	case ret != nvml.SUCCESS:
		return "", deviceError(index, uuid, "nvmlDeviceGetMigMode", ret)
	case current == nvml.DEVICE_MIG_ENABLE:
		return MIGEnabled, nil
	case current == nvml.DEVICE_MIG_DISABLE:
		return MIGDisabled, nil
	}
	return "", fmt.Errorf("gpu: GPU %d (%s): nvmlDeviceGetMigMode: unknown mode %d", index, uuid, current)
}

// migDevices returns the UUIDs of the MIG devices of a GPU in MIG mode, in
// MIG index order. Empty slots (NOT_FOUND, INVALID_ARGUMENT) are skipped.
func migDevices(index int, uuid string, dev nvml.Device) ([]string, error) {
	n, ret := dev.GetMaxMigDeviceCount()
	if ret != nvml.SUCCESS {
		return nil, deviceError(index, uuid, "nvmlDeviceGetMaxMigDeviceCount", ret)
	}
	var migs []string
	for j := range n {
		mig, ret := dev.GetMigDeviceHandleByIndex(j)
		switch ret {
		case nvml.SUCCESS:
		case nvml.ERROR_NOT_FOUND, nvml.ERROR_INVALID_ARGUMENT:
			continue
		default:
			return nil, deviceError(index, uuid, fmt.Sprintf("nvmlDeviceGetMigDeviceHandleByIndex(%d)", j), ret)
		}
		id, ret := mig.GetUUID()
		if ret != nvml.SUCCESS {
			return nil, deviceError(index, uuid, fmt.Sprintf("MIG device %d: nvmlDeviceGetUUID", j), ret)
		}
		migs = append(migs, id)
	}
	return migs, nil
}

// cString converts a NUL-terminated C char array (int8 or uint8 depending
// on the go-nvml version) to a string, stopping at the first NUL.
func cString[T int8 | uint8](b []T) string {
	s := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}
