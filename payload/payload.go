// Package payload owns the optional capture of request and response bodies:
// encrypted, as they pass, to age recipients (filippo.io/age) that the
// sidecar holds only public keys of, and decrypted later by whoever holds an
// identity (an auditor reconstructing a request).
//
// One request's capture is one age file whose plaintext is
//
//	"auditproxy-payload-v1\n"
//	uvarint(length of the request body)
//	request body
//	response body (to the end of the plaintext)
//
// so that one X25519 agreement per recipient covers both bodies. The bodies
// are the bytes the audit event's input and output hashes cover, so a
// decrypted capture can be checked against the event.
package payload

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"

	"filippo.io/age"

	"github.com/auditproxy/auditproxy/internal/redact"
)

const magic = "auditproxy-payload-v1\n"

// ParseRecipients parses age recipients ("age1..."), one per string.
func ParseRecipients(specs []string) ([]age.Recipient, error) {
	var out []age.Recipient
	for _, s := range specs {
		if kind := redact.SecretKind(s); kind != "" {
			// Never printed: an identity given here is the key that
			// decrypts every capture.
			return nil, fmt.Errorf("a payload recipient is %s, which must not be shared: give its public recipient (age1...)", kind)
		}
		r, err := age.ParseX25519Recipient(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("payload recipient %q: %w", s, err)
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, errors.New("payload capture needs at least one recipient (age1...)")
	}
	return out, nil
}

// Sealer encrypts one request's bodies as they pass. Bytes past the limit
// (per body) are not captured and the capture is marked truncated; the
// hashes in the event still cover the whole bodies.
type Sealer struct {
	buf        bytes.Buffer
	w          io.WriteCloser
	limit      int64
	in, out    int64 // bytes captured
	inTrunc    bool
	outTrunc   bool
	err        error
	lenScratch [binary.MaxVarintLen64]byte
}

// NewSealer starts a capture for recipients with the request body, limited
// to limit bytes per body.
func NewSealer(recipients []age.Recipient, limit int64, request []byte) (*Sealer, error) {
	s := &Sealer{limit: limit}
	w, err := age.Encrypt(&s.buf, recipients...)
	if err != nil {
		return nil, err
	}
	s.w = w
	if int64(len(request)) > limit {
		request, s.inTrunc = request[:limit], true
	}
	s.in = int64(len(request))
	n := binary.PutUvarint(s.lenScratch[:], uint64(len(request)))
	if _, err := io.WriteString(w, magic); err != nil {
		return nil, err
	}
	if _, err := w.Write(s.lenScratch[:n]); err != nil {
		return nil, err
	}
	if _, err := w.Write(request); err != nil {
		return nil, err
	}
	return s, nil
}

// WriteResponse captures the next bytes of the response body.
func (s *Sealer) WriteResponse(p []byte) {
	if s.err != nil || s.outTrunc {
		return
	}
	if rest := s.limit - s.out; int64(len(p)) > rest {
		p, s.outTrunc = p[:rest], true
	}
	s.out += int64(len(p))
	_, s.err = s.w.Write(p)
}

// Capture is a finished capture, as the audit event carries it.
type Capture struct {
	Ciphertext  []byte
	InputBytes  int64 // captured, at most the limit
	OutputBytes int64
	Truncated   bool
}

// Close finishes the capture.
func (s *Sealer) Close() (Capture, error) {
	if err := s.w.Close(); s.err == nil {
		s.err = err
	}
	return Capture{Ciphertext: s.buf.Bytes(), InputBytes: s.in, OutputBytes: s.out, Truncated: s.inTrunc || s.outTrunc}, s.err
}

// Open decrypts a capture with identities and returns its two bodies.
func Open(ciphertext []byte, identities []age.Identity) (request, response []byte, err error) {
	r, err := age.Decrypt(bytes.NewReader(ciphertext), identities...)
	if err != nil {
		return nil, nil, fmt.Errorf("decrypt payload: %w", err)
	}
	plain, err := io.ReadAll(r)
	if err != nil {
		return nil, nil, fmt.Errorf("decrypt payload: %w", err)
	}
	body, ok := bytes.CutPrefix(plain, []byte(magic))
	if !ok {
		return nil, nil, errors.New("decrypted payload is not an auditproxy capture")
	}
	n, size := binary.Uvarint(body)
	if size <= 0 {
		return nil, nil, errors.New("decrypted payload: bad request length")
	}
	body = body[size:]
	if uint64(len(body)) < n {
		return nil, nil, errors.New("decrypted payload: request length beyond the end")
	}
	return body[:n], body[n:], nil
}

// ParseIdentities reads an age identity file (as age-keygen writes it).
func ParseIdentities(r io.Reader) ([]age.Identity, error) {
	ids, err := age.ParseIdentities(r)
	if err != nil {
		return nil, fmt.Errorf("age identity: %w", err)
	}
	return ids, nil
}
