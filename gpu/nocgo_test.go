//go:build !cgo

package gpu

import (
	"errors"
	"testing"
)

func TestOpenWithoutCgo(t *testing.T) {
	r, err := Open(nil)
	if r != nil || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Open = %v, %v; want nil and an error wrapping ErrUnavailable", r, err)
	}
	if want := "gpu: NVML not available: built without cgo (CGO_ENABLED=0); NVML needs a cgo build"; err.Error() != want {
		t.Errorf("error = %q; want %q", err, want)
	}
	var zero Reader
	if _, err := zero.Read(); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Read error %v does not wrap ErrUnavailable", err)
	}
	if err := zero.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}
