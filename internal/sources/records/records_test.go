package records_test

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/pushproxy/pushproxy/internal/broker/brokertest"
	"github.com/pushproxy/pushproxy/internal/sources/records"
)

type note struct {
	Text string `json:"text"`
}

var (
	errNotFound = errors.New("no note stored")
	errBad      = errors.New("unreadable note")
)

func codec() records.Codec[note] {
	return records.Codec[note]{
		What: "note", NotFound: errNotFound,
		Encode: func(n note) ([]byte, error) { return json.Marshal(n) },
		Decode: func(data []byte) (note, error) {
			var n note
			if err := json.Unmarshal(data, &n); err != nil || n.Text == "" {
				return note{}, errBad
			}
			return n, nil
		},
	}
}

// TestStores runs the same steps on both stores: a round trip, a missing
// key, an unreadable record left out of List with its error, deletes.
func TestStores(t *testing.T) {
	stores := []struct {
		name string
		make func(t *testing.T) (records.Store[note], func(key string, data []byte))
	}{
		{"memory", func(*testing.T) (records.Store[note], func(string, []byte)) {
			m := records.NewMemory(codec())
			return m, m.PutRaw
		}},
		{"NATS KV", func(t *testing.T) (records.Store[note], func(string, []byte)) {
			conn := brokertest.Start(t)
			kv, err := conn.JS.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: "notes"})
			if err != nil {
				t.Fatal(err)
			}
			return records.NewKV(kv, codec()), func(key string, data []byte) {
				if _, err := kv.Put(context.Background(), key, data); err != nil {
					t.Fatal(err)
				}
			}
		}},
	}
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			ctx := context.Background()
			s, putRaw := st.make(t)
			if err := s.Put(ctx, "a", note{Text: "alpha"}); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Get(ctx, "a"); err != nil || got.Text != "alpha" {
				t.Fatalf("Get a = %+v, %v", got, err)
			}
			if _, err := s.Get(ctx, "missing"); !errors.Is(err, errNotFound) {
				t.Fatalf("Get missing: %v, want the codec's NotFound", err)
			}
			putRaw("b", []byte(`{"text":`))
			if _, err := s.Get(ctx, "b"); !errors.Is(err, errBad) {
				t.Fatalf("Get b: %v, want the decode error", err)
			}
			if got, err := s.List(ctx); !errors.Is(err, errBad) || !maps.Equal(got, map[string]note{"a": {Text: "alpha"}}) {
				t.Fatalf("List = %v, %v", got, err)
			}
			for _, key := range []string{"a", "b", "never"} {
				if err := s.Delete(ctx, key); err != nil {
					t.Fatalf("Delete %s: %v", key, err)
				}
			}
			if got, err := s.List(ctx); err != nil || len(got) != 0 {
				t.Fatalf("List after deletes = %v, %v", got, err)
			}
		})
	}
}

// TestJSON: the JSON codec round-trips a record, ignores unknown fields,
// and refuses what is not JSON or what check refuses, with the reason.
func TestJSON(t *testing.T) {
	c := records.JSON("note", errNotFound, errBad, func(n note) error {
		if n.Text == "" {
			return errors.New("no text")
		}
		return nil
	})
	data, err := c.Encode(note{Text: "alpha"})
	if err != nil || string(data) != `{"text":"alpha"}` {
		t.Fatalf("Encode = %s, %v", data, err)
	}
	tests := []struct {
		name string
		data string
		want note
		err  string // contained in the error, which matches errBad; "" when none
	}{
		{"round trip", string(data), note{Text: "alpha"}, ""},
		{"unknown field", `{"text":"beta","colour":"red"}`, note{Text: "beta"}, ""},
		{"not JSON", `{"text":`, note{}, "unexpected EOF"},
		{"refused", `{"text":""}`, note{}, "no text"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.Decode([]byte(tt.data))
			switch {
			case tt.err == "" && (err != nil || got != tt.want):
				t.Fatalf("Decode = %+v, %v", got, err)
			case tt.err != "" && (!errors.Is(err, errBad) || !strings.Contains(err.Error(), tt.err) || got != note{}):
				t.Fatalf("Decode = %+v, %v; want an error with %q", got, err, tt.err)
			}
		})
	}
}
