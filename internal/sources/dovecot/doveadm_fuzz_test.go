package dovecot

import (
	"bytes"
	"testing"
)

// FuzzDoveadmAnswers decodes arbitrary doveadm answer bodies: no panic,
// and every count read is a non-negative number. Seeds:
// testdata/fuzz/FuzzDoveadmAnswers.
func FuzzDoveadmAnswers(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		answers, _ := decodeDoveadmAnswers(bytes.NewReader(body))
		for tag, a := range answers {
			if tag == "" {
				t.Fatal("an answer without a tag")
			}
			for _, name := range []string{"INBOX", "inbox", "Archive"} {
				n, err := a.unseen(name)
				if err == nil && n < 0 {
					t.Fatalf("tag %q mailbox %s: negative count %d", tag, name, n)
				}
			}
		}
	})
}
