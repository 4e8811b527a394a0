package dispatcher

import (
	"testing"
	"time"

	"github.com/pushproxy/pushproxy/internal/events"
)

func canonical(t testing.TB, e events.Event) []byte {
	t.Helper()
	e.Normalize()
	data, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func decodeSeeds(t testing.TB) [][]byte {
	at := time.Date(2026, 5, 6, 7, 8, 9, 123456789, time.UTC)
	moved := events.Event{Tenant: "fabrikam.com", User: "bob@fabrikam.com", Mailbox: "Archive", FromMailbox: "INBOX", Kind: events.KindMoved,
		Count: 3, ChangeID: "c2", OccurredAt: at.In(time.FixedZone("x", 3600)), Source: events.SourceEWS}
	return [][]byte{
		canonical(t, events.Event{Tenant: "fabrikam.com", User: "alice@fabrikam.com", Kind: events.KindNew, Unread: events.IntPtr(4), ChangeID: "c1", OccurredAt: at, ReceivedAt: at}),
		canonical(t, moved),
		canonical(t, events.Event{Tenant: "fabrikam.com", User: "alice@fabrikam.com", Kind: events.KindNew, UIDValidity: 17, UID: 4294967295, OccurredAt: at, Source: events.SourceDovecotOX}),
		[]byte(`{"v":1,"tenant":"fabrikam.com","user":"ali\u0063e@fabrikam.com","mailbox":"INBOX","kind":"new","count":1,"change_id":"x","occurred_at":"2026-01-01T00:00:00Z","source":"native"}`),
		[]byte(`{"v":1,"tenant":"fabrikam.com","user":"josé@fabrikam.com","mailbox":"INBOX","kind":"new","count":1,"change_id":"x","occurred_at":"2026-01-01T00:00:00Z","source":"native"}`),
		[]byte(` { "v" : 1 , "tenant" : "fabrikam.com" , "user":"a@b.c","mailbox":"INBOX","kind":"read","count":2,"change_id":"x","occurred_at":"2026-01-01T00:00:00+02:00","source":"native" } `),
		[]byte(`{"v":1,"tenant":"fabrikam.com","tenant":"contoso.com","user":"a@b.c","mailbox":"INBOX","kind":"new","count":1,"change_id":"x","occurred_at":"2026-01-01T00:00:00Z","source":"native"}`),
		[]byte(`{"V":1,"Tenant":"fabrikam.com","user":"a@b.c","mailbox":"INBOX","kind":"new","count":1,"change_id":"x","occurred_at":"2026-01-01T00:00:00Z","source":"native"}`),
		[]byte(`{"v":1.0,"tenant":"fabrikam.com","user":"a@b.c","mailbox":"INBOX","kind":"new","count":01,"change_id":"x","occurred_at":"2026-01-01T00:00:00Z"}`),
		[]byte(`{"v":1,"unread":null,"tenant":"fabrikam.com","user":"a@b.c","mailbox":"INBOX","kind":"snapshot","count":1,"change_id":"x","occurred_at":"2026-01-01T00:00:00Z","source":"native"}`),
		[]byte(`{"v":1,"uid":-1,"uidvalidity":4294967296}`),
		[]byte(`{"v":1,"occurred_at":"2026-13-01T00:00:00Z"}`),
		[]byte(`{"v":1,"extra":{"a":[1,2]}}`),
		[]byte(`{}`),
		[]byte(`{"v":1}x`),
		[]byte(`[]`),
		[]byte(``),
	}
}

func TestFastDecodeTakesTheCanonicalForm(t *testing.T) {
	for i, data := range decodeSeeds(t)[:3] {
		if _, ok := fastDecode(data); !ok {
			t.Errorf("seed %d: the canonical form %s took the slow path", i, data)
		}
	}
}

func TestDecodeEventMatchesEventsDecode(t *testing.T) {
	for _, data := range decodeSeeds(t) {
		checkSameDecode(t, data)
	}
}

// FuzzDecodeEvent checks that decodeEvent (fast path or not) accepts and
// decodes exactly what events.Decode does.
func FuzzDecodeEvent(f *testing.F) {
	for _, data := range decodeSeeds(f) {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkSameDecode(t, data) })
}

func checkSameDecode(t *testing.T, data []byte) {
	t.Helper()
	got, gotErr := decodeEvent(data)
	want, wantErr := events.Decode(data)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("%q: decodeEvent error %v, events.Decode error %v", data, gotErr, wantErr)
	}
	if gotErr != nil {
		if gotErr.Error() != wantErr.Error() {
			t.Fatalf("%q: decodeEvent error %q, events.Decode error %q", data, gotErr, wantErr)
		}
		return
	}
	g, err1 := got.Encode()
	w, err2 := want.Encode()
	if err1 != nil || err2 != nil || string(g) != string(w) || !got.OccurredAt.Equal(want.OccurredAt) || !got.ReceivedAt.Equal(want.ReceivedAt) {
		t.Fatalf("%q:\ndecodeEvent  %s\nevents.Decode %s", data, g, w)
	}
}

func BenchmarkDecodeEvent(b *testing.B) {
	data := decodeSeeds(b)[0]
	b.Run("fast", func(b *testing.B) {
		for range b.N {
			if _, err := decodeEvent(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("events.Decode", func(b *testing.B) {
		for range b.N {
			if _, err := events.Decode(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
