package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"
	"unicode"

	"filippo.io/age"
	"golang.org/x/mod/sumdb/note"

	"github.com/auditproxy/auditproxy/internal/fsutil"
	"github.com/auditproxy/auditproxy/internal/redact"
)

// runKeygen writes a new checkpoint signing key.
func runKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("keygen", "keygen --out FILE [--name NAME] | keygen --age --out FILE", stderr)
	host, _ := os.Hostname()
	name := fs.String("name", keyNameFor(host), "key `name`, shown in every signature line (no spaces or '+'): the --log-name of the sidecar that will sign with it (default, like --log-name's, this host's name), the first part of its log's origin NAME/EPOCH")
	out := fs.String("out", "", "`file` for the private key (mode 0600, never overwritten); the verifier key goes to FILE.pub and stdout")
	ageKey := fs.Bool("age", false, "make an age identity for an auditor instead (as age-keygen does): the identity in FILE (mode 0600), its recipient (age1..., for serve's --payload-recipient) on stdout; show --identity FILE decrypts captured bodies with it")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" {
		return usageError{"keygen: --out is required"}
	}
	if *ageKey {
		return writeAgeIdentity(*out, stdout)
	}
	vkey, err := writeSigningKey(*out, *name)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, vkey)
	return nil
}

// writeAgeIdentity writes a new age X25519 identity to path in age-keygen's
// format (mode 0600, refusing to overwrite), and prints its recipient.
func writeAgeIdentity(path string, stdout io.Writer) error {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return err
	}
	text := fmt.Sprintf("# created: %s\n# public key: %s\n%s\n", time.Now().UTC().Format(time.RFC3339), id.Recipient(), id)
	err = fsutil.CreateSecretFile(path, []byte(text))
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("keygen: %s exists; not overwriting it", path)
	}
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	fmt.Fprintln(stdout, id.Recipient())
	return nil
}

// writeSigningKey generates an Ed25519 note key named name, writes the
// private key to path (0600, refusing to overwrite) and the verifier key to
// path.pub, and returns the verifier key.
func writeSigningKey(path, name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "+ \t\n") {
		return "", usageError{fmt.Sprintf("key name %q: want a non-empty name without spaces or '+'", name)}
	}
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		return "", err
	}
	err = fsutil.CreateSecretFile(path, []byte(skey+"\n"))
	if errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("signing key %s exists; not overwriting it", path)
	}
	if err == nil {
		err = os.WriteFile(path+".pub", []byte(vkey+"\n"), 0o644)
	}
	if err != nil {
		return "", fmt.Errorf("write signing key: %w", err)
	}
	return vkey, nil
}

// loadSigner reads a private key written by keygen.
func loadSigner(path string) (note.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	s, err := note.NewSigner(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("signing key %s: not a key written by auditproxy keygen (%v)", path, err)
	}
	return s, nil
}

// loadVerifiers reads checkpoint verifier keys (keygen's FILE.pub, one
// key per line; a line may also be given directly as the key text).
func loadVerifiers(specs []string) (note.Verifiers, error) {
	vs, err := loadVerifierKeys(specs)
	return note.VerifierList(vs...), err
}

// loadVerifierKeys reads --pubkey keys, as loadKeys reads keys.
func loadVerifierKeys(specs []string) ([]note.Verifier, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	return loadKeys("--pubkey", "the checkpoint verifier key (signing.key.pub, NAME+HASH+KEY, as auditproxy keygen writes FILE.pub)", specs, note.NewVerifier)
}

// keyIDs names keys as notes do: NAME+HASH.
func keyIDs(vs []note.Verifier) []string {
	var ids []string
	for _, v := range vs {
		ids = append(ids, fmt.Sprintf("%s+%08x", v.Name(), v.KeyHash()))
	}
	return ids
}

// loadKeys reads the verifier keys a flag names, one per line of each
// file, or each given as text, with parse; what says what the flag takes.
// A line that is not such a key is named by its place, never printed: given
// by mistake, it may be a secret. A key given twice (a file and its text)
// is one key: note.VerifierList would call a repeated key ambiguous and
// verify nothing with it.
func loadKeys(flag, what string, specs []string, parse func(string) (note.Verifier, error)) ([]note.Verifier, error) {
	var vs []note.Verifier
	seen := map[string]bool{}
	for _, spec := range specs {
		text, where := spec, "the key given"
		if b, err := os.ReadFile(spec); err == nil {
			text, where = string(b), spec
		} else if !strings.Contains(spec, "+") {
			return nil, fmt.Errorf("%s %s: %w", flag, spec, err)
		}
		for i, line := range strings.Split(text, "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if kind := redact.SecretKind(line); kind != "" {
				return nil, fmt.Errorf("%s: line %d of %s is %s, which must not be shared: give %s", flag, i+1, where, kind, what)
			}
			v, err := parse(line)
			if err != nil {
				return nil, fmt.Errorf("%s: line %d of %s is not %s: %v", flag, i+1, where, what, err)
			}
			if !seen[line] {
				seen[line] = true
				vs = append(vs, v)
			}
		}
	}
	if len(vs) == 0 {
		return nil, fmt.Errorf("%s: no key in it", flag)
	}
	return vs, nil
}

// keyNameFor returns the name of the signing key of the log named logName:
// the log name, with the characters a note key name cannot hold ('+' and
// spaces) made '-'.
//
// C2SP tlog-checkpoint says a log's key name SHOULD match its checkpoints'
// origin. The origin is NAME/EPOCH, and a new epoch is a new origin: a new
// tree, started when the old one cannot be continued (lost state), which
// no checkpoint of the old origin may be inconsistent with. The key, and
// the verifier key auditors and witnesses hold, outlive epochs, so the key
// is named after the log, the part of the origin that stays.
func keyNameFor(logName string) string {
	return strings.Map(func(r rune) rune {
		if r == '+' || unicode.IsSpace(r) {
			return '-'
		}
		return r
	}, logName)
}

// keyNameWarning says why a signing key named keyName does not suit the
// log named logName, or "".
func keyNameWarning(keyName, logName string) string {
	if want := keyNameFor(logName); keyName != want {
		return fmt.Sprintf("the checkpoint signing key is named %q, not after the log %q: C2SP tlog-checkpoint says a checkpoint's key name SHOULD match its origin (%s/EPOCH here); make a key with auditproxy keygen --name %s, or run with --log-name %s",
			keyName, logName, logName, want, keyName)
	}
	return ""
}
