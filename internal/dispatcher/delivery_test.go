package dispatcher

import "testing"

// TestDeliveryOf checks deliveryOf against the rules of jetstream's metadata
// parser on both ack subject layouts and on malformed subjects.
func TestDeliveryOf(t *testing.T) {
	tests := []struct {
		name, reply    string
		seq, delivered uint64
		wantErr        bool
	}{
		{name: "v1", reply: "$JS.ACK.MAIL.dispatcher-p0.3.1234.17.1700000000000000000.42", seq: 1234, delivered: 3},
		{name: "v2", reply: "$JS.ACK._.ACCHASH.MAIL.dispatcher-p0.1.99.5.1700000000000000000.0.RANDOM", seq: 99, delivered: 1},
		{name: "v2 without token", reply: "$JS.ACK.dom.ACCHASH.MAIL.c.2.7.5.1700000000000000000.0", seq: 7, delivered: 2},
		{name: "v2 with extra tokens", reply: "$JS.ACK.dom.ACCHASH.MAIL.c.2.8.5.1700000000000000000.0.R.X", seq: 8, delivered: 2},
		{name: "not a number", reply: "$JS.ACK.MAIL.c.x.1y.17.1.42", seq: 0, delivered: 0},
		{name: "too few tokens", reply: "$JS.ACK.MAIL.c.1.2.3.4", wantErr: true},
		{name: "ten tokens", reply: "$JS.ACK.MAIL.c.1.2.3.4.5.6", wantErr: true},
		{name: "other prefix", reply: "$JS.NAK.MAIL.c.3.1234.17.1700000000000000000.42", wantErr: true},
		{name: "empty", reply: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seq, delivered, err := deliveryOf(tt.reply)
			if (err != nil) != tt.wantErr {
				t.Fatalf("deliveryOf(%q) error = %v, want error %v", tt.reply, err, tt.wantErr)
			}
			if err == nil && (seq != tt.seq || delivered != tt.delivered) {
				t.Fatalf("deliveryOf(%q) = %d, %d; want %d, %d", tt.reply, seq, delivered, tt.seq, tt.delivered)
			}
		})
	}
}
