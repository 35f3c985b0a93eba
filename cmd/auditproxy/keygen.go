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

// loadVerifiers reads verifier keys (keygen's FILE.pub, one key per line;
// a line may also be given directly as the key text).
func loadVerifiers(specs []string) (note.Verifiers, error) {
	var vs []note.Verifier
	for _, spec := range specs {
		text := spec
		if b, err := os.ReadFile(spec); err == nil {
			text = string(b)
		} else if !strings.Contains(spec, "+") {
			return nil, fmt.Errorf("--pubkey %s: %w", spec, err)
		}
		where := spec
		if text == spec {
			where = "the key given"
		}
		for i, line := range strings.Split(text, "\n") {
			line = strings.TrimSpace(line)
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			// The line is never printed: given by mistake, it may be a
			// secret.
			if kind := redact.SecretKind(line); kind != "" {
				return nil, fmt.Errorf("--pubkey: line %d of %s is %s, which must not be shared: give the checkpoint verifier key (signing.key.pub, NAME+HASH+KEY)", i+1, where, kind)
			}
			v, err := note.NewVerifier(line)
			if err != nil {
				return nil, fmt.Errorf("--pubkey: line %d of %s is not a checkpoint verifier key (NAME+HASH+KEY, as auditproxy keygen writes FILE.pub): %v", i+1, where, err)
			}
			vs = append(vs, v)
		}
	}
	return note.VerifierList(vs...), nil
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
