package identity

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/auditproxy/auditproxy/audit"
	"github.com/auditproxy/auditproxy/gpu"
	"github.com/auditproxy/auditproxy/internal/testutil"
)

// fakeGPU is a gpuReader whose identity and read error the test sets.
type fakeGPU struct {
	mu     sync.Mutex
	id     *gpu.Identity
	err    error
	reads  int
	closed bool
}

func (f *fakeGPU) Read() (*gpu.Identity, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	if f.closed {
		return nil, errors.New("read after close")
	}
	if f.err != nil {
		return nil, f.err
	}
	id := *f.id
	return &id, nil
}

func (f *fakeGPU) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *fakeGPU) set(id *gpu.Identity, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.id, f.err = id, err
}

func (f *fakeGPU) state() (reads int, closed bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads, f.closed
}

func h100(uuid string) *gpu.Identity {
	return &gpu.Identity{DriverVersion: "550.54.15", CUDADriverVersion: "12.4",
		Devices: []gpu.Device{{UUID: uuid, Name: "NVIDIA H100 80GB HBM3", MIGMode: gpu.MIGDisabled}}}
}

// events collects what a GPU records.
type events struct {
	mu   sync.Mutex
	list []map[string]any
}

func (e *events) record(ev []byte) error {
	var m map[string]any
	if err := json.Unmarshal(ev, &m); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, m)
	return nil
}

func (e *events) get() []map[string]any {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]map[string]any(nil), e.list...)
}

// digestIn returns details[side].digest (side "" for details.digest).
func digestIn(ev map[string]any, side string) any {
	d, _ := ev["details"].(map[string]any)
	if side != "" {
		d, _ = d[side].(map[string]any)
	}
	return d["digest"]
}

// TestGPUFollowsTheIdentity: the identity OpenGPU read is current at
// once and recorded only by Start (the sidecar records proxy_started
// between the two); a re-read that finds another one records gpu_changed with both
// and makes it current; a failed re-read is logged and changes nothing; a
// re-read of the same identity records nothing; Close stops the re-reads
// and closes the reader.
func TestGPUFollowsTheIdentity(t *testing.T) {
	first, second := h100("GPU-1"), h100("GPU-2")
	fake := &fakeGPU{id: first}
	var evs events
	var logs testutil.LogBuffer
	g, err := OpenGPU(GPUOptions{Visible: []string{"0"}, Interval: 5 * time.Millisecond, Record: evs.record,
		Source: audit.Source{Host: "h"}, Logger: logs.Logger(),
		open: func(visible []string) (gpuReader, error) {
			if fmt.Sprint(visible) != "[0]" {
				t.Errorf("opened with %q, want the selection given", visible)
			}
			return fake, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if cur := g.Current(); cur == nil || *cur != first.Digest() {
		t.Fatalf("Current %v, want the first identity's digest", cur)
	}
	if got := evs.get(); len(got) != 0 {
		t.Fatalf("OpenGPU recorded %v", got)
	}
	g.Start()
	got := evs.get()
	if len(got) != 1 || got[0]["type"] != audit.TypeGPUIdentity || digestIn(got[0], "") != first.Digest() {
		t.Fatalf("at start recorded %v, want one gpu_identity", got)
	}
	if src, _ := got[0]["source"].(map[string]any); src["host"] != "h" {
		t.Errorf("event source %v", got[0]["source"])
	}

	fake.set(nil, errors.New("nvml: GPU is lost"))
	testutil.WaitFor(t, "a failed re-read logged", func() bool { return len(logs.Lines("cannot re-read the GPU identity")) > 0 })
	if cur := g.Current(); cur == nil || *cur != first.Digest() || len(evs.get()) != 1 {
		t.Errorf("after a failed re-read: Current %v, %d events; want the first identity and nothing recorded", cur, len(evs.get()))
	}

	fake.set(second, nil)
	testutil.WaitFor(t, "gpu_changed", func() bool { return len(evs.get()) == 2 })
	ch := evs.get()[1]
	if ch["type"] != audit.TypeGPUChanged || digestIn(ch, "before") != first.Digest() || digestIn(ch, "after") != second.Digest() {
		t.Errorf("recorded %v, want gpu_changed from the first identity to the second", ch)
	}
	if cur := g.Current(); cur == nil || *cur != second.Digest() {
		t.Errorf("Current %v after the change, want the second identity's", cur)
	}
	if len(logs.Lines("GPU identity changed")) != 1 {
		t.Errorf("the change was not logged once:\n%s", logs.String())
	}

	reads, _ := fake.state()
	testutil.WaitFor(t, "more re-reads", func() bool { r, _ := fake.state(); return r > reads+3 })
	if n := len(evs.get()); n != 2 {
		t.Errorf("%d events after re-reads of an unchanged identity, want 2", n)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	reads, closed := fake.state()
	if !closed {
		t.Error("Close left the reader open")
	}
	time.Sleep(20 * time.Millisecond)
	if r, _ := fake.state(); r != reads {
		t.Errorf("%d reads after Close", r-reads)
	}
	if strings.Contains(logs.String(), "read after close") {
		t.Errorf("the watcher read a closed reader:\n%s", logs.String())
	}
}

// TestGPUWithoutIdentity: where the identity cannot be read, OpenGPU
// logs a warning and events record "gpu": null (Current is nil), or, with
// Require, fails with the reason; a reader that opened but could not read
// is closed.
func TestGPUWithoutIdentity(t *testing.T) {
	unavailable := fmt.Errorf("%w: libnvidia-ml.so.1 not found", gpu.ErrUnavailable)
	for _, tc := range []struct {
		name      string
		openFails bool
	}{
		{"open fails", true},
		{"read fails", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, require := range []bool{false, true} {
				reader := &fakeGPU{err: unavailable}
				open := func([]string) (gpuReader, error) {
					if tc.openFails {
						return nil, unavailable
					}
					return reader, nil
				}
				var evs events
				var logs testutil.LogBuffer
				g, err := startGPU(GPUOptions{Require: require, Record: evs.record, Logger: logs.Logger(), open: open})
				if !tc.openFails {
					if _, closed := reader.state(); !closed {
						t.Errorf("require=%v: the reader that could not read was left open", require)
					}
				}
				if len(evs.get()) != 0 {
					t.Errorf("require=%v: recorded %v", require, evs.get())
				}
				if require {
					if g != nil || !errors.Is(err, gpu.ErrUnavailable) {
						t.Errorf("require: %v %v, want the error", g, err)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if cur := g.Current(); cur != nil {
					t.Errorf("Current %q without an identity", *cur)
				}
				if l := logs.Lines(`no GPU identity: events record "gpu": null`); len(l) != 1 || !strings.Contains(fmt.Sprint(l[0]["err"]), "libnvidia-ml.so.1") {
					t.Errorf("want one warning with the reason:\n%s", logs.String())
				}
				if err := g.Close(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	var none *GPU
	if none.Current() != nil || none.Close() != nil {
		t.Error("a nil GPU is not empty")
	}
}

// TestGPUWithoutNVML: the default reader is NVML's; on a machine without
// it OpenGPU goes on without an identity.
func TestGPUWithoutNVML(t *testing.T) {
	if _, err := exec.LookPath("nvidia-smi"); err == nil {
		t.Skip("this machine has an NVIDIA driver")
	}
	g, err := startGPU(GPUOptions{})
	if err != nil || g.Current() != nil {
		t.Fatalf("OpenGPU without NVML: %v, %v", g.Current(), err)
	}
	g.Close()
	if _, err := startGPU(GPUOptions{Require: true}); !errors.Is(err, gpu.ErrUnavailable) {
		t.Errorf("OpenGPU with Require without NVML: %v, want ErrUnavailable", err)
	}
}

// startGPU is OpenGPU, then Start.
func startGPU(opts GPUOptions) (*GPU, error) {
	g, err := OpenGPU(opts)
	g.Start()
	return g, err
}
