package ews

import (
	"errors"
	"strings"
	"testing"
)

// FuzzGetFolder feeds arbitrary answers to DecodeGetFolder. Seeds: the
// golden answers in testdata and the corpus in testdata/fuzz/FuzzGetFolder.
func FuzzGetFolder(f *testing.F) {
	for _, name := range []string{"getfolder_success.xml", "getfolder_nonexistent.xml", "getfolder_busy_fault.xml", "getfolder_busy_message.xml"} {
		f.Add(readFile(f, name))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		a, err := DecodeGetFolder(body)
		if err != nil {
			if a != nil || !errors.Is(err, ErrMalformedAnswer) {
				t.Fatalf("got %+v with error %v", a, err)
			}
			return
		}
		switch {
		case a.ResponseClass != ClassSuccess && a.ResponseClass != ClassWarning && a.ResponseClass != ClassError:
			t.Fatalf("class %q", a.ResponseClass)
		case a.ResponseClass == ClassError && (a.ResponseCode == "" || a.UnreadCount != 0):
			t.Fatalf("error answer %+v", a)
		case a.Fault && a.ResponseClass != ClassError:
			t.Fatalf("fault %+v", a)
		case a.UnreadCount < 0 || a.BackOff < 0:
			t.Fatalf("answer %+v", a)
		case len(a.ResponseCode) > maxCodeLen || len(a.MessageText) > maxAnswerText+len("…") || strings.ContainsAny(a.MessageText, "\r\n"):
			t.Fatalf("answer text %+v", a)
		}
	})
}
