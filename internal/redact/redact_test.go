package redact

import "testing"

func TestSecretKind(t *testing.T) {
	for s, secret := range map[string]bool{
		"PRIVATE+KEY+gpu-node-7+08f37785+AbCd":                           true,
		"  AGE-SECRET-KEY-1QQQQ":                                         true,
		"age-secret-key-1qqqq":                                           true,
		"# created: 2026\n# public key: age1xyz\nAGE-SECRET-KEY-1Q":      true,
		"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn...":                 true,
		"-----BEGIN EC PRIVATE KEY-----":                                 true,
		"gpu-node-7+08f37785+AQgt3RjsyVVDRnxBUYYSNZ":                     false,
		"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p": false,
		"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI":                          false,
		"":                                                               false,
	} {
		if got := SecretKind(s) != ""; got != secret {
			t.Errorf("SecretKind(%q) = %q", s, SecretKind(s))
		}
	}
}
