package change

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// AllowedSigners is an OpenSSH allowed-signers file: which keys may sign
// for which identities.
type AllowedSigners struct {
	entries []allowedSigner
}

type allowedSigner struct {
	line       int
	principals []string // patterns
	namespaces []string // nil: any
	after      time.Time
	before     time.Time
	key        ssh.PublicKey
}

// ParseAllowedSigners reads an allowed-signers file (name says where it
// came from in errors). It supports the options namespaces, valid-after and
// valid-before; a certificate authority (cert-authority) or any other option
// is an error, not ignored: a line the file's author meant to restrict must
// not be read as unrestricted.
func ParseAllowedSigners(name string, b []byte) (*AllowedSigners, error) {
	var as AllowedSigners
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		e, err := parseAllowedSigner(line)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: %v", name, n, err)
		}
		e.line = n
		as.entries = append(as.entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	if len(as.entries) == 0 {
		return nil, fmt.Errorf("%s: no signer in it (want lines of: principals [options] keytype base64-key)", name)
	}
	return &as, nil
}

func parseAllowedSigner(line string) (allowedSigner, error) {
	var e allowedSigner
	var principals string
	if line[0] == '"' {
		end := strings.IndexByte(line[1:], '"')
		if end < 0 {
			return e, fmt.Errorf("principals: unterminated quote")
		}
		principals, line = line[1:1+end], line[2+end:]
	} else {
		i := strings.IndexAny(line, " \t")
		if i < 0 {
			return e, fmt.Errorf("want principals, then a key")
		}
		principals, line = line[:i], line[i:]
	}
	for _, p := range strings.Split(principals, ",") {
		if p = strings.TrimSpace(p); p != "" {
			e.principals = append(e.principals, p)
		}
	}
	if len(e.principals) == 0 {
		return e, fmt.Errorf("no principal")
	}
	key, _, options, rest, err := ssh.ParseAuthorizedKey([]byte(strings.TrimSpace(line)))
	if err != nil {
		return e, fmt.Errorf("not an SSH public key: %v", err)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return e, fmt.Errorf("more than one key on the line")
	}
	e.key = key
	for _, o := range options {
		name, value, hasValue := strings.Cut(o, "=")
		value = strings.Trim(value, `"`)
		switch strings.ToLower(name) {
		case "namespaces":
			if !hasValue {
				return e, fmt.Errorf("namespaces without a value")
			}
			e.namespaces = strings.Split(value, ",")
		case "valid-after", "valid-before":
			t, err := parseSSHTime(value)
			if err != nil {
				return e, fmt.Errorf("%s: %v", name, err)
			}
			if strings.EqualFold(name, "valid-after") {
				e.after = t
			} else {
				e.before = t
			}
		case "cert-authority":
			return e, fmt.Errorf("cert-authority: certificate signers are not supported; list each signer's own key")
		default:
			return e, fmt.Errorf("option %q is not supported (namespaces, valid-after and valid-before are)", name)
		}
	}
	return e, nil
}

// parseSSHTime reads the times of valid-after and valid-before: YYYYMMDD or
// YYYYMMDDHHMM[SS], local time, or UTC with a trailing Z.
func parseSSHTime(s string) (time.Time, error) {
	loc := time.Local
	if z, ok := strings.CutSuffix(s, "Z"); ok {
		s, loc = z, time.UTC
	}
	for _, layout := range []string{"20060102", "200601021504", "20060102150405"} {
		if len(s) == len(layout) {
			if t, err := time.ParseInLocation(layout, s, loc); err == nil {
				return t, nil
			}
		}
	}
	return time.Time{}, fmt.Errorf("%q is not YYYYMMDD[HHMM[SS]][Z]", s)
}

// Principals returns the identities key may sign for in namespace at time
// at: the principals (patterns as the file gives them) of each line that
// lists key and allows both.
func (as *AllowedSigners) Principals(key ssh.PublicKey, namespace string, at time.Time) []string {
	want := key.Marshal()
	var out []string
	for _, e := range as.entries {
		if !bytes.Equal(e.key.Marshal(), want) {
			continue
		}
		if e.namespaces != nil && !matchList(namespace, e.namespaces) {
			continue
		}
		if !e.after.IsZero() && at.Before(e.after) || !e.before.IsZero() && !at.Before(e.before) {
			continue
		}
		out = append(out, e.principals...)
	}
	return out
}

// Allows reports whether key may sign for identity in namespace at time at.
func (as *AllowedSigners) Allows(key ssh.PublicKey, identity, namespace string, at time.Time) bool {
	return matchList(identity, as.Principals(key, namespace, at))
}

// matchList reports whether s matches the pattern list as OpenSSH's
// match_pattern_list does: some pattern matches and no negated one
// ("!pattern") does.
func matchList(s string, patterns []string) bool {
	matched := false
	for _, p := range patterns {
		if neg, ok := strings.CutPrefix(p, "!"); ok {
			if wildcard(neg, s) {
				return false
			}
			continue
		}
		matched = matched || wildcard(p, s)
	}
	return matched
}

// wildcard matches s against a pattern of literal bytes, '*' (any run) and
// '?' (any one byte).
func wildcard(p, s string) bool {
	for len(p) > 0 {
		switch p[0] {
		case '*':
			for p = p[1:]; len(p) > 0 && p[0] == '*'; p = p[1:] {
			}
			if p == "" {
				return true
			}
			for i := 0; i <= len(s); i++ {
				if wildcard(p, s[i:]) {
					return true
				}
			}
			return false
		case '?':
			if s == "" {
				return false
			}
		default:
			if s == "" || s[0] != p[0] {
				return false
			}
		}
		p, s = p[1:], s[1:]
	}
	return s == ""
}
