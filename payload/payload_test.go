package payload

import (
	"bytes"
	"strings"
	"testing"

	"filippo.io/age"
)

func TestSealAndOpen(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := age.GenerateX25519Identity()
	rcpts, err := ParseRecipients([]string{id.Recipient().String(), other.Recipient().String()})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name         string
		req, resp    string
		limit        int64
		wantReq      string
		wantResp     string
		wantTruncate bool
	}{
		{"whole", `{"prompt":"hi"}`, "data: a\n\ndata: [DONE]\n\n", 1 << 20, `{"prompt":"hi"}`, "data: a\n\ndata: [DONE]\n\n", false},
		{"empty bodies", "", "", 1 << 20, "", "", false},
		{"large", strings.Repeat("p", 70000), strings.Repeat("s", 200000), 1 << 20, strings.Repeat("p", 70000), strings.Repeat("s", 200000), false},
		{"truncated", strings.Repeat("q", 100), strings.Repeat("r", 100), 10, strings.Repeat("q", 10), strings.Repeat("r", 10), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSealer(rcpts, tc.limit, []byte(tc.req))
			if err != nil {
				t.Fatal(err)
			}
			// The response arrives in pieces.
			for i := 0; i < len(tc.resp); i += 7 {
				s.WriteResponse([]byte(tc.resp[i:min(i+7, len(tc.resp))]))
			}
			c, err := s.Close()
			if err != nil {
				t.Fatal(err)
			}
			if c.Truncated != tc.wantTruncate || c.InputBytes != int64(len(tc.wantReq)) || c.OutputBytes != int64(len(tc.wantResp)) {
				t.Errorf("capture %+v", c)
			}
			if bytes.Contains(c.Ciphertext, []byte(tc.req)) && tc.req != "" {
				t.Error("the request is in the ciphertext in clear")
			}
			for _, who := range []age.Identity{id, other} {
				req, resp, err := Open(c.Ciphertext, []age.Identity{who})
				if err != nil || string(req) != tc.wantReq || string(resp) != tc.wantResp {
					t.Errorf("Open = %q, %q, %v", req, resp, err)
				}
			}
			stranger, _ := age.GenerateX25519Identity()
			if _, _, err := Open(c.Ciphertext, []age.Identity{stranger}); err == nil {
				t.Error("a stranger's identity decrypted the capture")
			}
		})
	}
	if _, err := ParseRecipients([]string{"age1notakey"}); err == nil {
		t.Error("a bad recipient was accepted")
	}
	if _, err := ParseRecipients(nil); err == nil {
		t.Error("no recipients was accepted")
	}
}
