package change

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/auditproxy/auditproxy/internal/redact"
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
	if kind := redact.SecretKind(string(b)); kind != "" {
		return nil, fmt.Errorf("%s is %s, not an allowed-signers file (principals [options] public key, one per line)", name, kind)
	}
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
	// As OpenSSH reads them: split at commas, nothing trimmed ("a, b"
	// lists "a" and " b").
	for _, p := range strings.Split(principals, ",") {
		if p != "" {
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
	seen := map[string]bool{}
	for _, o := range options {
		name, value, hasValue := strings.Cut(o, "=")
		value = strings.Trim(value, `"`)
		if seen[strings.ToLower(name)] {
			return e, fmt.Errorf("option %s given twice", name) // as ssh-keygen refuses it
		}
		seen[strings.ToLower(name)] = true
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

// parseSSHTime reads the times of valid-after and valid-before as OpenSSH
// does: YYYYMMDD or YYYYMMDDHHMM[SS], in local time, or in UTC with a
// trailing Z (or z, or UTC). Local time makes the file mean different
// instants on machines in different zones: write Z.
func parseSSHTime(s string) (time.Time, error) {
	loc := time.Local
	for _, suffix := range []string{"Z", "z", "UTC"} {
		if z, ok := strings.CutSuffix(s, suffix); ok {
			s, loc = z, time.UTC
			break
		}
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

// Listed reports whether some line lists key for namespace at time at.
func (as *AllowedSigners) Listed(key ssh.PublicKey, namespace string, at time.Time) bool {
	return as.find(key, namespace, at, func(allowedSigner) bool { return true })
}

// Allows reports whether key may sign for identity in namespace at time at:
// whether some line lists the key, allows the namespace and the time, and
// has a principal pattern list that identity matches. Each line is taken
// on its own, as ssh-keygen -Y verify takes them: a negation on one line
// does not undo another line.
func (as *AllowedSigners) Allows(key ssh.PublicKey, identity, namespace string, at time.Time) bool {
	return as.find(key, namespace, at, func(e allowedSigner) bool { return matchList(identity, e.principals) })
}

func (as *AllowedSigners) find(key ssh.PublicKey, namespace string, at time.Time, ok func(allowedSigner) bool) bool {
	want := key.Marshal()
	for _, e := range as.entries {
		switch {
		case !bytes.Equal(e.key.Marshal(), want):
		case e.namespaces != nil && !matchList(namespace, e.namespaces):
		case !e.after.IsZero() && at.Before(e.after), !e.before.IsZero() && at.After(e.before):
		case ok(e):
			return true
		}
	}
	return false
}

// principalsOf lists the principal patterns of the lines that list key for
// namespace at time at, for messages.
func (as *AllowedSigners) principalsOf(key ssh.PublicKey, namespace string, at time.Time) []string {
	var out []string
	as.find(key, namespace, at, func(e allowedSigner) bool { out = append(out, e.principals...); return false })
	return out
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
// '?' (any one byte), in O(len(p)*len(s)) at worst: on a mismatch it only
// lets the last '*' take one byte more, never backtracking further (a
// pattern like *a*a*a*b is not exponential).
func wildcard(p, s string) bool {
	pi, si := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] != '*' && p[pi] == s[si]):
			pi++
			si++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case star >= 0:
			mark++
			pi, si = star+1, mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
