package dispatcher

import "testing"

// TestAckInfoOf checks ackInfoOf against the rules of jetstream's metadata
// parser on both ack subject layouts and on malformed subjects.
func TestAckInfoOf(t *testing.T) {
	tests := []struct {
		name, reply string
		want        ackInfo
		wantErr     bool
	}{
		{name: "v1", reply: "$JS.ACK.MAIL.dispatcher-p0.3.1234.17.1700000000000000000.42", want: ackInfo{streamSeq: 1234, consumerSeq: 17, count: 3}},
		{name: "v2", reply: "$JS.ACK._.ACCHASH.MAIL.dispatcher-p0.1.99.5.1700000000000000000.0.RANDOM", want: ackInfo{streamSeq: 99, consumerSeq: 5, count: 1}},
		{name: "v2 without token", reply: "$JS.ACK.dom.ACCHASH.MAIL.c.2.7.5.1700000000000000000.0", want: ackInfo{streamSeq: 7, consumerSeq: 5, count: 2}},
		{name: "v2 with extra tokens", reply: "$JS.ACK.dom.ACCHASH.MAIL.c.2.8.5.1700000000000000000.0.R.X", want: ackInfo{streamSeq: 8, consumerSeq: 5, count: 2}},
		{name: "not a number", reply: "$JS.ACK.MAIL.c.x.1y.17.1.42", want: ackInfo{consumerSeq: 17}},
		{name: "too few tokens", reply: "$JS.ACK.MAIL.c.1.2.3.4", wantErr: true},
		{name: "ten tokens", reply: "$JS.ACK.MAIL.c.1.2.3.4.5.6", wantErr: true},
		{name: "other prefix", reply: "$JS.NAK.MAIL.c.3.1234.17.1700000000000000000.42", wantErr: true},
		{name: "empty", reply: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ackInfoOf(tt.reply)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ackInfoOf(%q) error = %v, want error %v", tt.reply, err, tt.wantErr)
			}
			if err == nil && got != tt.want {
				t.Fatalf("ackInfoOf(%q) = %+v; want %+v", tt.reply, got, tt.want)
			}
		})
	}
}
