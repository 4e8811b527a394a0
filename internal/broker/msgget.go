package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// APISubject is the prefix of the JetStream API's subjects for js's
// options ("$JS.API." unless a prefix or a domain is set), ending with a
// dot.
func APISubject(js jetstream.JetStream) string {
	opts := js.Options()
	switch {
	case opts.APIPrefix != "":
		return strings.TrimSuffix(opts.APIPrefix, ".") + "."
	case opts.Domain != "":
		return "$JS." + opts.Domain + ".API."
	default:
		return "$JS.API."
	}
}

// MsgQuery says which message LeaderGetMsg asks for: the one at Seq, the
// first on NextBySubj from Seq on, or the last on LastBySubj.
type MsgQuery struct {
	Seq        uint64 `json:"seq,omitempty"`
	NextBySubj string `json:"next_by_subj,omitempty"`
	LastBySubj string `json:"last_by_subj,omitempty"`
}

// msgGetResponse is the JetStream API's answer to STREAM.MSG.GET.
type msgGetResponse struct {
	Error   *jetstream.APIError `json:"error,omitempty"`
	Message *struct {
		Subject  string    `json:"subject"`
		Sequence uint64    `json:"seq"`
		Header   []byte    `json:"hdrs,omitempty"`
		Data     []byte    `json:"data,omitempty"`
		Time     time.Time `json:"time"`
	} `json:"message,omitempty"`
}

// LeaderGetMsg asks the leader of stream for the message q names,
// through the JetStream API (STREAM.MSG.GET), never a direct get: a
// direct get may be answered by any replica, one that is behind among
// them (a server that was stopped or cut off and is catching up), while
// the leader holds every message the stream acknowledged. A stream
// holding no such message gives jetstream.ErrMsgNotFound. As the
// library's calls do, it waits for the answer at most js's default
// timeout when ctx has no deadline: a stream with no leader (its servers
// cut off from each other) may answer nothing at all.
func LeaderGetMsg(ctx context.Context, js jetstream.JetStream, stream string, q MsgQuery) (*jetstream.RawStreamMsg, error) {
	what := fmt.Sprintf("reading %+v from the leader of %s", q, stream)
	req, err := json.Marshal(q)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, js.Options().DefaultTimeout)
		defer cancel()
	}
	msg, err := js.Conn().RequestWithContext(ctx, APISubject(js)+"STREAM.MSG.GET."+stream, req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	var resp msgGetResponse
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, fmt.Errorf("%s: decoding the answer: %w", what, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return nil, jetstream.ErrMsgNotFound
	case resp.Error != nil:
		return nil, fmt.Errorf("%s: %w", what, resp.Error)
	case resp.Message == nil:
		return nil, fmt.Errorf("%s: %w", what, jetstream.ErrInvalidJetStreamResponse)
	}
	m := resp.Message
	out := &jetstream.RawStreamMsg{Subject: m.Subject, Sequence: m.Sequence, Data: m.Data, Time: m.Time}
	if len(m.Header) > 0 {
		if out.Header, err = nats.DecodeHeadersMsg(m.Header); err != nil {
			return nil, fmt.Errorf("%s: decoding the headers: %w", what, err)
		}
	}
	return out, nil
}
