// Package redact recognizes secrets in text a user gives where something
// public belongs (a private signing key for a verifier key, an age identity
// for a recipient, an SSH private key), so that an error about it can say
// what it is without printing it.
package redact

import "strings"

// SecretKind says what secret s looks like ("" if none): the key formats
// auditproxy and its users handle. It looks at the text's start, after
// spaces, and in any line of it.
func SecretKind(s string) string {
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "PRIVATE+KEY+"):
			return "a private signing key (auditproxy keygen's FILE, not FILE.pub)"
		case strings.HasPrefix(strings.ToUpper(line), "AGE-SECRET-KEY-"), strings.HasPrefix(line, "AGE-PLUGIN-"):
			return "an age identity (a secret key; its public recipient is the age1... line age-keygen printed)"
		case strings.HasPrefix(line, "-----BEGIN") && strings.Contains(line, "PRIVATE KEY"):
			return "a private key (PEM or OpenSSH)"
		}
	}
	return ""
}
