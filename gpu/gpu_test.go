//go:build cgo

package gpu

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

const h100Name = "NVIDIA H100 80GB HBM3"

// Deterministic identities for the 8 GPUs of the mock (the mock draws random
// UUIDs and leaves serial and bus id unset).
func uuidOf(i int) string   { return fmt.Sprintf("GPU-%08x-1111-4222-8333-44445555%04d", 0xa0+i, i) }
func serialOf(i int) string { return fmt.Sprintf("165232300%04d", i) }
func busOf(i int) string    { return fmt.Sprintf("00000000:%02X:00.0", 0x18+0x11*i) }
func migOf(i, j int) string {
	return fmt.Sprintf("MIG-%08x-aaaa-4bbb-8ccc-dddd0000%02d%02d", 0xb0+i, i, j)
}

// newH100 returns go-nvml's DGX H100 mock (8 H100 SXM5 80GB, driver
// 550.54.15, CUDA 12.4) with what it leaves unwired filled in:
// SystemGetCudaDriverVersion_v2 and GetSerial (which panic when unset), a
// PCI bus id (empty in the mock) and fixed UUIDs.
func newH100(t *testing.T) *server.Server {
	t.Helper()
	s := dgxh100.New()
	s.SystemGetCudaDriverVersion_v2Func = func() (int, nvml.Return) {
		return s.CudaDriverVersion, nvml.SUCCESS
	}
	for i := range s.Devices {
		d := dev(s, i)
		d.UUID = uuidOf(i)
		d.PciBusID = busOf(i)
		d.GetSerialFunc = func() (string, nvml.Return) { return serialOf(i), nvml.SUCCESS }
		d.GetPciInfoFunc = func() (nvml.PciInfo, nvml.Return) {
			p := nvml.PciInfo{PciDeviceId: d.Config.PciDeviceId}
			for k := 0; k < len(d.PciBusID) && k < len(p.BusId)-1; k++ {
				p.BusId[k] = int8(d.PciBusID[k])
			}
			return p, nvml.SUCCESS
		}
	}
	return s
}

func dev(s *server.Server, i int) *server.Device { return s.Devices[i].(*server.Device) }

// enableMIG puts GPU i of s in MIG mode with n MIG devices in slots 0, 2,
// 4, … of 7 (the odd slots are empty and answer NOT_FOUND).
func enableMIG(s *server.Server, i, n int) {
	d := dev(s, i)
	d.SetMigMode(nvml.DEVICE_MIG_ENABLE)
	d.GetMaxMigDeviceCountFunc = func() (int, nvml.Return) { return 7, nvml.SUCCESS }
	d.GetMigDeviceHandleByIndexFunc = func(j int) (nvml.Device, nvml.Return) {
		if j < 0 || j >= 7 {
			return nil, nvml.ERROR_INVALID_ARGUMENT
		}
		if j%2 == 1 || j/2 >= n {
			return nil, nvml.ERROR_NOT_FOUND
		}
		uuid := migOf(i, j/2)
		return &mock.Device{GetUUIDFunc: func() (string, nvml.Return) { return uuid, nvml.SUCCESS }}, nvml.SUCCESS
	}
}

// want is the Device the mock GPU i should read as.
func want(i int) Device {
	return Device{Index: i, UUID: uuidOf(i), Name: h100Name, Serial: serialOf(i), PCIBusID: busOf(i), MIGMode: MIGDisabled}
}

func wantAll() []Device {
	var ds []Device
	for i := range 8 {
		ds = append(ds, want(i))
	}
	return ds
}

// clearEnv unsets the selection variables for the test.
func clearEnv(t *testing.T) {
	t.Setenv("CUDA_VISIBLE_DEVICES", "")
	t.Setenv("NVIDIA_VISIBLE_DEVICES", "")
}

func TestRead(t *testing.T) {
	tests := []struct {
		name    string
		visible []string
		cuda    string // CUDA_VISIBLE_DEVICES
		nvidia  string // NVIDIA_VISIBLE_DEVICES
		setup   func(s *server.Server)
		want    []Device
	}{
		{name: "all 8 H100s by default", want: wantAll()},
		{name: "all", visible: []string{"all"}, want: wantAll()},
		{name: "void is the default", nvidia: "void", want: wantAll()},
		{name: "by index", visible: []string{"0", "2"}, want: []Device{want(0), want(2)}},
		{name: "by index in one string", visible: []string{" 5 ,3"}, want: []Device{want(5), want(3)}},
		{name: "by UUID, in the order given", visible: []string{uuidOf(6), uuidOf(1)}, want: []Device{want(6), want(1)}},
		{name: "by UUID prefix", visible: []string{uuidOf(4)[:13]}, want: []Device{want(4)}},
		{name: "same GPU twice counts once", visible: []string{"3", uuidOf(3)}, want: []Device{want(3)}},
		{name: "none", visible: []string{"none"}, want: []Device{}},
		{name: "CUDA_VISIBLE_DEVICES none", cuda: "none", want: []Device{}},
		{name: "CUDA_VISIBLE_DEVICES", cuda: "7,1", want: []Device{want(7), want(1)}},
		{name: "CUDA_VISIBLE_DEVICES beats NVIDIA_VISIBLE_DEVICES", cuda: "2", nvidia: "3", want: []Device{want(2)}},
		{name: "explicit list beats env", visible: []string{"4"}, cuda: "2", nvidia: "3", want: []Device{want(4)}},
		{name: "empty explicit list falls back to env", visible: []string{""}, cuda: "2", want: []Device{want(2)}},
		{name: "empty CUDA_VISIBLE_DEVICES falls back to NVIDIA_VISIBLE_DEVICES", nvidia: uuidOf(5), want: []Device{want(5)}},
		{name: "NVIDIA_VISIBLE_DEVICES indexes", nvidia: "6,7", want: []Device{want(6), want(7)}},
		{name: "NVIDIA_VISIBLE_DEVICES already applied by the runtime",
			nvidia: "8,9,10,11,12,13,14,15", want: wantAll()},
		{name: "serial NOT_SUPPORTED", visible: []string{"1"},
			setup: func(s *server.Server) {
				dev(s, 1).GetSerialFunc = func() (string, nvml.Return) { return "", nvml.ERROR_NOT_SUPPORTED }
			},
			want: []Device{func() Device { d := want(1); d.Serial = ""; return d }()}},
		{name: "MIG NOT_SUPPORTED", visible: []string{"1"},
			setup: func(s *server.Server) {
				dev(s, 1).GetMigModeFunc = func() (int, int, nvml.Return) { return 0, 0, nvml.ERROR_NOT_SUPPORTED }
			},
			want: []Device{func() Device { d := want(1); d.MIGMode = MIGUnsupported; return d }()}},
		{name: "MIG enabled with devices", visible: []string{"0", "2"},
			setup: func(s *server.Server) { enableMIG(s, 2, 3) },
			want: []Device{want(0), func() Device {
				d := want(2)
				d.MIGMode = MIGEnabled
				d.MIGDevices = []string{migOf(2, 0), migOf(2, 1), migOf(2, 2)}
				return d
			}()}},
		{name: "MIG enabled without devices", visible: []string{"2"},
			setup: func(s *server.Server) { enableMIG(s, 2, 0) },
			want:  []Device{func() Device { d := want(2); d.MIGMode = MIGEnabled; return d }()}},
		{name: "by MIG UUID: the parent with the selected MIG devices", cuda: migOf(5, 2) + "," + migOf(5, 0),
			setup: func(s *server.Server) { enableMIG(s, 5, 3); enableMIG(s, 6, 3) },
			want: []Device{func() Device {
				d := want(5)
				d.MIGMode = MIGEnabled
				d.MIGDevices = []string{migOf(5, 2), migOf(5, 0)}
				return d
			}()}},
		{name: "MIG UUID and its parent: the whole GPU", cuda: migOf(5, 2) + ",5",
			setup: func(s *server.Server) { enableMIG(s, 5, 3) },
			want: []Device{func() Device {
				d := want(5)
				d.MIGMode = MIGEnabled
				d.MIGDevices = []string{migOf(5, 0), migOf(5, 1), migOf(5, 2)}
				return d
			}()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CUDA_VISIBLE_DEVICES", tt.cuda)
			t.Setenv("NVIDIA_VISIBLE_DEVICES", tt.nvidia)
			s := newH100(t)
			if tt.setup != nil {
				tt.setup(s)
			}
			r, err := newReader(s, tt.visible)
			if err != nil {
				t.Fatalf("newReader: %v", err)
			}
			defer r.Close()
			id, err := r.Read()
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if id.DriverVersion != "550.54.15" || id.CUDADriverVersion != "12.4" {
				t.Errorf("versions = %q, %q; want 550.54.15, 12.4", id.DriverVersion, id.CUDADriverVersion)
			}
			if !reflect.DeepEqual(id.Devices, tt.want) {
				t.Errorf("devices:\n got %+v\nwant %+v", id.Devices, tt.want)
			}
		})
	}
}

func TestSelectionErrors(t *testing.T) {
	tests := []struct {
		name    string
		visible []string
		cuda    string
		nvidia  string
		setup   func(s *server.Server)
		want    []string // substrings of the error
	}{
		{name: "unknown UUID", visible: []string{"0", "GPU-deadbeef-0000-0000-0000-000000000000"},
			want: []string{`GPU list entry "GPU-deadbeef-0000-0000-0000-000000000000"`, "no such device", "8 GPUs"}},
		{name: "unknown UUID in CUDA_VISIBLE_DEVICES", cuda: "GPU-deadbeef",
			want: []string{`CUDA_VISIBLE_DEVICES entry "GPU-deadbeef"`, "no such device"}},
		{name: "ambiguous UUID prefix", visible: []string{"GPU-000000a"},
			want: []string{`"GPU-000000a"`, "ambiguous", uuidOf(0), uuidOf(1)}},
		{name: "index out of range", nvidia: "8",
			want: []string{`NVIDIA_VISIBLE_DEVICES entry "8"`, "no GPU with index 8", "indexes 0-7"}},
		{name: "unknown MIG UUID", visible: []string{"MIG-feed"},
			setup: func(s *server.Server) { enableMIG(s, 0, 2) },
			want:  []string{`GPU list entry "MIG-feed"`, "no such device", "2 MIG devices"}},
		{name: "bad entry", cuda: "0,,1", want: []string{`CUDA_VISIBLE_DEVICES="0,,1"`, `entry 2 ""`, "empty entry"}},
		{name: "bad explicit entry", visible: []string{"0", "gpu0"}, want: []string{`GPU list "0,gpu0"`, `entry 2 "gpu0"`}},
		{name: "bad env ignored when explicit list given", visible: []string{"9"}, cuda: "x",
			want: []string{`GPU list entry "9"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CUDA_VISIBLE_DEVICES", tt.cuda)
			t.Setenv("NVIDIA_VISIBLE_DEVICES", tt.nvidia)
			s := newH100(t)
			if tt.setup != nil {
				tt.setup(s)
			}
			r, err := newReader(s, tt.visible)
			if err == nil {
				r.Close()
				t.Fatal("newReader succeeded; want an error")
			}
			if errors.Is(err, ErrUnavailable) {
				t.Errorf("a selection error wraps ErrUnavailable: %v", err)
			}
			if !strings.HasPrefix(err.Error(), "gpu: ") {
				t.Errorf("error %q does not start with gpu: ", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			// NVML is shut down again when Init succeeded.
			if n, m := len(s.InitCalls()), len(s.ShutdownCalls()); n != m {
				t.Errorf("%d Init calls, %d Shutdown calls", n, m)
			}
		})
	}
}

func TestUnavailable(t *testing.T) {
	clearEnv(t)
	tests := []struct {
		name  string
		setup func(s *server.Server)
		msg   string
		ret   nvml.Return // wrapped, when not SUCCESS
	}{
		{name: "no library",
			setup: func(s *server.Server) { s.InitFunc = func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND } },
			msg:   "gpu: NVML not available: libnvidia-ml.so.1 not found (no NVIDIA driver on this machine)",
			ret:   nvml.ERROR_LIBRARY_NOT_FOUND},
		{name: "driver not loaded",
			setup: func(s *server.Server) { s.InitFunc = func() nvml.Return { return nvml.ERROR_DRIVER_NOT_LOADED } },
			msg:   "gpu: NVML not available: NVIDIA kernel driver not loaded",
			ret:   nvml.ERROR_DRIVER_NOT_LOADED},
		{name: "other Init failure",
			setup: func(s *server.Server) { s.InitFunc = func() nvml.Return { return nvml.ERROR_UNKNOWN } },
			msg:   "gpu: NVML not available: nvmlInit: ERROR_UNKNOWN",
			ret:   nvml.ERROR_UNKNOWN},
		{name: "no GPU",
			setup: func(s *server.Server) { s.Devices = nil },
			msg:   "gpu: NVML not available: no NVIDIA GPU found (NVML sees 0 devices)"},
		{name: "device count fails",
			setup: func(s *server.Server) {
				s.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_GPU_IS_LOST }
			},
			msg: "gpu: NVML not available: nvmlDeviceGetCount: ERROR_GPU_IS_LOST",
			ret: nvml.ERROR_GPU_IS_LOST},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newH100(t)
			tt.setup(s)
			r, err := newReader(s, nil)
			if err == nil {
				r.Close()
				t.Fatal("newReader succeeded; want an error")
			}
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("error %v does not wrap ErrUnavailable", err)
			}
			if err.Error() != tt.msg {
				t.Errorf("error = %q\n  want %q", err, tt.msg)
			}
			if tt.ret != nvml.SUCCESS && !errors.Is(err, tt.ret) {
				t.Errorf("error %v does not wrap %v", err, tt.ret)
			}
			if n, m := len(s.InitCalls()), len(s.ShutdownCalls()); n == 1 && tt.ret == nvml.SUCCESS && m != 1 {
				t.Errorf("Init succeeded but Shutdown called %d times", m)
			}
		})
	}
}

func TestNoGPUWithNoneSelected(t *testing.T) {
	clearEnv(t)
	s := newH100(t)
	s.Devices = nil
	r, err := newReader(s, []string{"none"})
	if err != nil {
		t.Fatalf("newReader: %v", err)
	}
	defer r.Close()
	id, err := r.Read()
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	b, _ := json.Marshal(id)
	if got, want := string(b), `{"driver_version":"550.54.15","cuda_driver_version":"12.4","devices":[]}`; got != want {
		t.Errorf("JSON = %s\nwant %s", got, want)
	}
}

func TestReadErrors(t *testing.T) {
	clearEnv(t)
	tests := []struct {
		name  string
		setup func(s *server.Server)
		want  string
		ret   nvml.Return
	}{
		{name: "name fails",
			setup: func(s *server.Server) {
				dev(s, 3).GetNameFunc = func() (string, nvml.Return) { return "", nvml.ERROR_GPU_IS_LOST }
			},
			want: "gpu: GPU 3 (" + uuidOf(3) + "): nvmlDeviceGetName: ERROR_GPU_IS_LOST",
			ret:  nvml.ERROR_GPU_IS_LOST},
		{name: "serial fails otherwise than NOT_SUPPORTED",
			setup: func(s *server.Server) {
				dev(s, 2).GetSerialFunc = func() (string, nvml.Return) { return "", nvml.ERROR_UNKNOWN }
			},
			want: "gpu: GPU 2 (" + uuidOf(2) + "): nvmlDeviceGetSerial: ERROR_UNKNOWN",
			ret:  nvml.ERROR_UNKNOWN},
		{name: "driver version fails",
			setup: func(s *server.Server) {
				s.SystemGetDriverVersionFunc = func() (string, nvml.Return) { return "", nvml.ERROR_UNKNOWN }
			},
			want: "gpu: nvmlSystemGetDriverVersion: ERROR_UNKNOWN",
			ret:  nvml.ERROR_UNKNOWN},
		{name: "selected GPU gone",
			setup: func(s *server.Server) { s.Devices = s.Devices[:4] },
			want:  `gpu: GPU list entry "` + uuidOf(6) + `": no such device among the 4 GPUs NVML sees`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newH100(t)
			r, err := newReader(s, []string{"0", "2", "3", uuidOf(6)})
			if err != nil {
				t.Fatalf("newReader: %v", err)
			}
			defer r.Close()
			tt.setup(s)
			id, err := r.Read()
			if err == nil {
				t.Fatalf("Read = %+v; want an error", id)
			}
			if err.Error() != tt.want {
				t.Errorf("error = %q\n  want %q", err, tt.want)
			}
			if tt.ret != nvml.SUCCESS && !errors.Is(err, tt.ret) {
				t.Errorf("error %v does not wrap %v", err, tt.ret)
			}
			if errors.Is(err, ErrUnavailable) {
				t.Errorf("Read error wraps ErrUnavailable: %v", err)
			}
		})
	}
}

func TestDigest(t *testing.T) {
	clearEnv(t)
	read := func(s *server.Server) *Identity {
		t.Helper()
		r, err := newReader(s, nil)
		if err != nil {
			t.Fatalf("newReader: %v", err)
		}
		defer r.Close()
		id, err := r.Read()
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		return id
	}
	s := newH100(t)
	base := read(s)
	d := base.Digest()

	b, _ := json.Marshal(base)
	sum := sha256.Sum256(b)
	if want := "sha256:" + hex.EncodeToString(sum[:]); d != want {
		t.Errorf("Digest = %s; want sha256 of the JSON, %s", d, want)
	}
	if again := read(s).Digest(); again != d {
		t.Errorf("Digest not stable: %s then %s", d, again)
	}
	if other := read(newH100(t)).Digest(); other != d {
		t.Errorf("Digest differs for an identical machine: %s and %s", d, other)
	}
	if (*Identity)(nil).Digest() != "" {
		t.Error(`Digest of nil is not ""`)
	}

	changes := []struct {
		name string
		do   func(s *server.Server)
	}{
		{"serial", func(s *server.Server) {
			dev(s, 7).GetSerialFunc = func() (string, nvml.Return) { return "1652323009999", nvml.SUCCESS }
		}},
		{"GPU replaced", func(s *server.Server) { dev(s, 0).UUID = "GPU-0badc0de-0000-4000-8000-000000000000" }},
		{"MIG enabled", func(s *server.Server) { enableMIG(s, 4, 0) }},
		{"MIG device added", func(s *server.Server) { enableMIG(s, 4, 1) }},
		{"driver", func(s *server.Server) { s.DriverVersion = "550.90.07" }},
		{"CUDA", func(s *server.Server) { s.CudaDriverVersion = 12050 }},
		{"GPU missing", func(s *server.Server) { s.Devices = s.Devices[:7] }},
	}
	seen := map[string]string{d: "base"}
	for _, c := range changes {
		s := newH100(t)
		c.do(s)
		got := read(s).Digest()
		if prev, dup := seen[got]; dup {
			t.Errorf("%s: Digest %s same as %s", c.name, got, prev)
		}
		seen[got] = c.name
	}
}

func TestIdentityJSON(t *testing.T) {
	id := Identity{
		DriverVersion:     "550.54.15",
		CUDADriverVersion: "12.4",
		Devices: []Device{
			{Index: 0, UUID: "GPU-a", Name: h100Name, Serial: "1", PCIBusID: "00000000:18:00.0", MIGMode: "disabled"},
			{Index: 1, UUID: "GPU-b", Name: h100Name, Serial: "", PCIBusID: "00000000:29:00.0", MIGMode: "enabled", MIGDevices: []string{"MIG-c"}},
		},
	}
	b, err := json.Marshal(id)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"driver_version":"550.54.15","cuda_driver_version":"12.4","devices":[` +
		`{"index":0,"uuid":"GPU-a","name":"NVIDIA H100 80GB HBM3","serial":"1","pci_bus_id":"00000000:18:00.0","mig_mode":"disabled"},` +
		`{"index":1,"uuid":"GPU-b","name":"NVIDIA H100 80GB HBM3","serial":"","pci_bus_id":"00000000:29:00.0","mig_mode":"enabled","mig_devices":["MIG-c"]}]}`
	if string(b) != want {
		t.Errorf("JSON:\n got %s\nwant %s", b, want)
	}
}

func TestCUDAVersion(t *testing.T) {
	for v, want := range map[int]string{12040: "12.4", 12080: "12.8", 11020: "11.2", 13000: "13.0", 10010: "10.1", 0: ""} {
		if got := cudaVersion(v); got != want {
			t.Errorf("cudaVersion(%d) = %q; want %q", v, got, want)
		}
	}
}

func TestCString(t *testing.T) {
	var a [32]int8
	var b [32]uint8
	for i, c := range "00000000:3B:00.0" {
		a[i], b[i] = int8(c), uint8(c)
	}
	a[20], b[20] = 'x', 'x' // after the NUL: ignored
	if got := cString(a[:]); got != "00000000:3B:00.0" {
		t.Errorf("cString([32]int8) = %q", got)
	}
	if got := cString(b[:]); got != "00000000:3B:00.0" {
		t.Errorf("cString([32]uint8) = %q", got)
	}
	if got := cString(make([]int8, 0)); got != "" {
		t.Errorf("cString(empty) = %q", got)
	}
}

func TestClose(t *testing.T) {
	clearEnv(t)
	s := newH100(t)
	r, err := newReader(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if n := len(s.ShutdownCalls()); n != 1 {
		t.Errorf("Shutdown called %d times; want 1", n)
	}
	if _, err := r.Read(); err == nil {
		t.Error("Read after Close succeeded")
	}

	s = newH100(t)
	s.ShutdownFunc = func() nvml.Return { return nvml.ERROR_UNKNOWN }
	r, err = newReader(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); !errors.Is(err, nvml.ERROR_UNKNOWN) {
		t.Errorf("Close = %v; want an error wrapping ERROR_UNKNOWN", err)
	}
}

func TestConcurrentRead(t *testing.T) {
	clearEnv(t)
	s := newH100(t)
	enableMIG(s, 1, 2)
	r, err := newReader(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	first, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				id, err := r.Read()
				if err != nil {
					t.Error(err)
					return
				}
				if id.Digest() != first.Digest() {
					t.Error("identity changed between reads")
					return
				}
			}
		})
	}
	wg.Wait()
	r.Close()
}

// TestOpen uses the real go-nvml library: without an NVIDIA driver (as in
// CI) it must fail with ErrUnavailable; with one it must read.
func TestOpen(t *testing.T) {
	clearEnv(t)
	r, err := Open(nil)
	if err != nil {
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Open: %v; want an error wrapping ErrUnavailable", err)
		}
		t.Logf("Open: %v", err)
		return
	}
	defer r.Close()
	id, err := r.Read()
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	t.Logf("identity %s: %+v", id.Digest(), id)
}
