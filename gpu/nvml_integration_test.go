//go:build nvml

// Integration test against the real NVML, for a machine with an NVIDIA GPU
// and driver:
//
//	go test -tags nvml -run Integration -v ./gpu/
//
// It compares what Read returns with nvidia-smi, and skips where nvidia-smi
// is not installed.

package gpu

import (
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func nvidiaSMI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("nvidia-smi", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("nvidia-smi %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// normBusID makes NVML's and nvidia-smi's PCI addresses comparable: lower
// case, and the domain as 4 hex digits ("00000000:3B:00.0" and
// "0000:3b:00.0" are the same device).
func normBusID(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	domain, rest, ok := strings.Cut(s, ":")
	if !ok || strings.Count(rest, ":") != 1 {
		return s
	}
	d, err := strconv.ParseUint(domain, 16, 32)
	if err != nil {
		return s
	}
	return strconv.FormatUint(d, 16) + ":" + rest
}

// smiValue maps nvidia-smi's "[N/A]", "[Not Supported]" and the like to "".
func smiValue(s string) string {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		return ""
	}
	return s
}

func TestIntegrationNVML(t *testing.T) {
	if _, err := exec.LookPath("nvidia-smi"); err != nil {
		t.Skip("nvidia-smi not found: not a machine with an NVIDIA driver; skipping the NVML integration test")
	}
	// nvidia-smi ignores CUDA_VISIBLE_DEVICES and sees what the container
	// runtime exposed: compare with every GPU NVML sees.
	t.Setenv("CUDA_VISIBLE_DEVICES", "")
	t.Setenv("NVIDIA_VISIBLE_DEVICES", "")

	r, err := Open(nil)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	id, err := r.Read()
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	t.Logf("identity %s: %+v", id.Digest(), *id)

	var rows [][]string
	for _, line := range strings.Split(strings.TrimSpace(nvidiaSMI(t,
		"--query-gpu=uuid,name,serial,pci.bus_id,driver_version", "--format=csv,noheader")), "\n") {
		f := strings.Split(line, ",")
		if len(f) != 5 {
			t.Fatalf("nvidia-smi line %q: want 5 fields", line)
		}
		for i := range f {
			f[i] = smiValue(f[i])
		}
		rows = append(rows, f)
	}
	if len(id.Devices) != len(rows) {
		t.Fatalf("Read found %d GPUs, nvidia-smi %d", len(id.Devices), len(rows))
	}
	migModes := strings.Split(strings.TrimSpace(nvidiaSMI(t, "--query-gpu=mig.mode.current", "--format=csv,noheader")), "\n")

	// nvidia-smi -L: "GPU 0: NAME (UUID: GPU-…)" then "  MIG … Device 0: (UUID: MIG-…)".
	uuidRE := regexp.MustCompile(`\(UUID: ((?:GPU|MIG)-[^)]+)\)`)
	migsOf := map[string][]string{}
	var gpu string
	for _, line := range strings.Split(nvidiaSMI(t, "-L"), "\n") {
		m := uuidRE.FindStringSubmatch(line)
		switch {
		case m == nil:
		case strings.HasPrefix(m[1], "GPU-"):
			gpu = m[1]
		default:
			migsOf[gpu] = append(migsOf[gpu], m[1])
		}
	}

	for i, d := range id.Devices {
		row := rows[i]
		if d.Index != i {
			t.Errorf("device %d has index %d", i, d.Index)
		}
		if d.UUID != row[0] {
			t.Errorf("GPU %d: UUID %q, nvidia-smi %q", i, d.UUID, row[0])
		}
		if d.Name != row[1] {
			t.Errorf("GPU %d: name %q, nvidia-smi %q", i, d.Name, row[1])
		}
		if d.Serial != row[2] {
			t.Errorf("GPU %d: serial %q, nvidia-smi %q", i, d.Serial, row[2])
		}
		if normBusID(d.PCIBusID) != normBusID(row[3]) {
			t.Errorf("GPU %d: PCI bus id %q, nvidia-smi %q", i, d.PCIBusID, row[3])
		}
		if id.DriverVersion != row[4] {
			t.Errorf("driver version %q, nvidia-smi %q", id.DriverVersion, row[4])
		}
		if i < len(migModes) {
			want := strings.ToLower(smiValue(migModes[i]))
			if want == "" {
				want = MIGUnsupported
			}
			if d.MIGMode != want {
				t.Errorf("GPU %d: MIG mode %q, nvidia-smi %q", i, d.MIGMode, migModes[i])
			}
		}
		if got, want := strings.Join(d.MIGDevices, ","), strings.Join(migsOf[d.UUID], ","); got != want {
			t.Errorf("GPU %d: MIG devices %q, nvidia-smi -L %q", i, got, want)
		}
	}

	// The CUDA version nvidia-smi prints in its banner.
	if m := regexp.MustCompile(`CUDA Version: ([0-9]+\.[0-9]+)`).FindStringSubmatch(nvidiaSMI(t)); m != nil {
		if id.CUDADriverVersion != m[1] {
			t.Errorf("CUDA driver version %q, nvidia-smi %q", id.CUDADriverVersion, m[1])
		}
	} else {
		t.Logf("no CUDA version in nvidia-smi's banner; not compared")
	}

	// Selecting the first GPU by UUID reads it alone.
	r1, err := Open([]string{id.Devices[0].UUID})
	if err != nil {
		t.Fatalf("Open(%s): %v", id.Devices[0].UUID, err)
	}
	defer r1.Close()
	one, err := r1.Read()
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if len(one.Devices) != 1 || one.Devices[0].UUID != id.Devices[0].UUID {
		t.Errorf("Open(first UUID) read %+v", one.Devices)
	}
}

func TestNormBusID(t *testing.T) {
	for in, want := range map[string]string{
		"00000000:3B:00.0": "0:3b:00.0",
		"0000:3b:00.0":     "0:3b:00.0",
		"00000001:18:00.0": "1:18:00.0",
		"weird":            "weird",
	} {
		if got := normBusID(in); got != want {
			t.Errorf("normBusID(%q) = %q; want %q", in, got, want)
		}
	}
}
