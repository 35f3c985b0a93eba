package main

import "errors"

// closers is a stack of release functions: what start has opened so far,
// released in reverse order when a later step fails.
type closers []func() error

// push adds release, to be called before everything pushed earlier.
func (cs *closers) push(release func() error) { *cs = append(*cs, release) }

// unwind calls every release function, the last pushed first, empties the
// stack, and returns their errors joined.
func (cs *closers) unwind() error {
	var errs []error
	for i := len(*cs) - 1; i >= 0; i-- {
		if err := (*cs)[i](); err != nil {
			errs = append(errs, err)
		}
	}
	*cs = nil
	return errors.Join(errs...)
}
