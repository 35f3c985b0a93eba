package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/auditproxy/auditproxy/eventsrc"
	"github.com/auditproxy/auditproxy/hashing"
)

// runKeyID prints the api_key_id that sidecars keyed with a given secret
// record for an API key, so that an operator holding a key (and the secret)
// can find its requests with query --api-key-id. The key is read from
// standard input, never from the command line, where it would stay in shell
// history and in the process list.
func runKeyID(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("keyid", "keyid --key-id-secret-file FILE [--log PATH] < api-key", stderr)
	secretFile := fs.String("key-id-secret-file", "./auditproxy-data/key-id.secret", "`file` with the sidecars' key id secret (serve's --key-id-secret-file, default DATA-DIR/key-id.secret)")
	logPath := fs.String("log", "", "events (`path`: files, directories, spool segments) to look the id up in: a note says when no event has it (a wrong secret gives an id no event has)")
	if err := parseFlags(fs, args); err != nil {
		if fs.NArg() > 0 {
			return usageError{"keyid: the API key is read from standard input, not from arguments"}
		}
		return err
	}
	secret, err := hashing.LoadKeyIDSecret(*secretFile)
	if err != nil {
		return err
	}
	k, err := hashing.NewKeyIDer(secret)
	if err != nil {
		return err
	}
	line, err := bufio.NewReaderSize(stdin, 64<<10).ReadBytes('\n')
	if err != nil && err != io.EOF {
		return fmt.Errorf("keyid: read the API key from standard input: %w", err)
	}
	// A bare key, or a whole Authorization header value: as for the proxy,
	// the id of a bearer credential is the id of its token.
	key := hashing.Credential(bytes.TrimSpace(line))
	if len(key) == 0 {
		return usageError{"keyid: no API key on standard input"}
	}
	id := k.ID(key)
	fmt.Fprintln(stdout, id)
	if *logPath != "" {
		needle := []byte(`"api_key_id":"` + id + `"`)
		found, events := false, 0
		err := eventsrc.Read(*logPath, func(ev []byte) {
			events++
			found = found || bytes.Contains(ev, needle)
		})
		if err = warnDamaged(stderr, err); err != nil {
			return fmt.Errorf("keyid: --log: %w", err)
		}
		if !found {
			fmt.Fprintf(stderr, "auditproxy: note: none of the %d events in %s has this key id: the key made no request there, or %s is not the secret its sidecars used\n", events, *logPath, *secretFile)
		}
	}
	return nil
}

// stdin is the standard input of keyid; tests replace it.
var stdin io.Reader = os.Stdin
