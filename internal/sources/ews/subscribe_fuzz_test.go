package ews

import (
	"errors"
	"strings"
	"testing"
)

// FuzzSubscribe feeds arbitrary answers to DecodeSubscribe. Seeds: the
// golden answers in testdata and the corpus in testdata/fuzz/FuzzSubscribe.
func FuzzSubscribe(f *testing.F) {
	for _, name := range []string{"subscribe_success.xml", "subscribe_invalid_watermark.xml", "subscribe_busy_message.xml", "getfolder_busy_fault.xml"} {
		f.Add(readFile(f, name))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		a, err := DecodeSubscribe(body)
		if err != nil {
			if a != nil || !errors.Is(err, ErrMalformedSubscribeAnswer) {
				t.Fatalf("got %+v with error %v", a, err)
			}
			return
		}
		switch {
		case a.ResponseClass != ClassSuccess && a.ResponseClass != ClassWarning && a.ResponseClass != ClassError:
			t.Fatalf("class %q", a.ResponseClass)
		case a.ResponseClass == ClassError && (a.ResponseCode == "" || a.SubscriptionID != "" || a.Watermark != ""):
			t.Fatalf("error answer %+v", a)
		case a.ResponseClass != ClassError && (a.SubscriptionID == "" || checkToken("", a.SubscriptionID, MaxIDLen) != nil):
			t.Fatalf("subscription id %q", a.SubscriptionID)
		case checkToken("", a.Watermark, MaxWatermarkLen) != nil:
			t.Fatalf("watermark %q", a.Watermark)
		case a.Fault && a.ResponseClass != ClassError:
			t.Fatalf("fault %+v", a)
		case a.BackOff < 0:
			t.Fatalf("back-off %+v", a)
		case len(a.ResponseCode) > maxCodeLen || len(a.MessageText) > maxAnswerText+len("…") || strings.ContainsAny(a.MessageText, "\r\n"):
			t.Fatalf("answer text %+v", a)
		}
	})
}
