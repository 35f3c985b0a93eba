//go:build !cgo

package gpu

// This file is the API of the package in a CGO_ENABLED=0 build, where
// go-nvml does not compile: Open always fails with ErrUnavailable.

// Reader reads the Identity of the selected GPUs through NVML. In a build
// without cgo it cannot be opened.
type Reader struct{}

var errNoCgo = &unavailableError{reason: "built without cgo (CGO_ENABLED=0); NVML needs a cgo build"}

// Open fails with an error wrapping ErrUnavailable: this binary was built
// without cgo, and NVML needs cgo.
func Open(visible []string) (*Reader, error) {
	return nil, errNoCgo
}

// Read fails with an error wrapping ErrUnavailable.
func (r *Reader) Read() (*Identity, error) {
	return nil, errNoCgo
}

// Close does nothing.
func (r *Reader) Close() error {
	return nil
}
