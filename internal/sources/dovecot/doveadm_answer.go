package dovecot

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/pushproxy/pushproxy/internal/sources"
)

// Answer names of the doveadm HTTP API: a command that ran is answered
// ["doveadmResponse", [...], tag], one that failed ["error", {...}, tag].
const (
	doveadmAnswerOK    = "doveadmResponse"
	doveadmAnswerError = "error"
)

// exitNoUser is doveadm's exit code for a user the userdb does not know
// (EX_NOUSER).
const exitNoUser = 67

// DoveadmError is a doveadm command's failure as the HTTP API reports it:
// ["error", {"type": "exitCode", "exitCode": 68}, tag].
type DoveadmError struct {
	// Type is doveadm's kind of failure: "exitCode" when the command ran
	// and failed, "unknownMethod" or another word when it did not run.
	Type string
	// ExitCode is the command's exit code (sysexits.h; 68 is "not found").
	ExitCode int
}

// Error names the failure and, where known, what its exit code means.
func (e *DoveadmError) Error() string {
	if meaning := exitCodeMeanings[e.ExitCode]; meaning != "" {
		return fmt.Sprintf("doveadm error %s %d (%s)", e.Type, e.ExitCode, meaning)
	}
	return fmt.Sprintf("doveadm error %s %d", e.Type, e.ExitCode)
}

// exitCodeMeanings are the exit codes doveadm documents for mailbox commands.
var exitCodeMeanings = map[int]string{
	64:         "bad parameters",
	65:         "data error",
	66:         "cannot open input",
	exitNoUser: "no such user",
	68:         "mailbox or object not found",
	69:         "service unavailable",
	70:         "internal error",
	73:         "cannot create",
	75:         "temporary failure",
	77:         "permission denied",
	78:         "configuration error",
}

// doveadmAnswer is one tagged answer: the mailbox statuses of a command
// that ran, or why it failed.
type doveadmAnswer struct {
	statuses []doveadmMailboxStatus
	err      error
}

// doveadmMailboxStatus is one mailbox of a mailboxStatus answer. Dovecot
// writes numbers as strings ("unseen":"3"); unseen stays raw until it is
// read.
type doveadmMailboxStatus struct {
	Mailbox string          `json:"mailbox"`
	Unseen  json.RawMessage `json:"unseen"`
}

// maxDoveadmUnseen bounds an unseen count read from doveadm: larger values
// are not a real mailbox's.
const maxDoveadmUnseen = 1 << 31

// decodeDoveadmAnswers reads a doveadm HTTP API answer body, a JSON array
// of [name, payload, tag] triples, into answers by tag. It reads the array
// element by element, so that when the body turns malformed part-way (as
// Dovecot 2.3 writes after some failures) the answers before that point
// are kept: it returns them together with the error. A well-formed element
// of the wrong shape is an answer with an error when its tag can be read,
// and skipped otherwise. A tag answered twice keeps its first answer.
func decodeDoveadmAnswers(r io.Reader) (map[string]doveadmAnswer, error) {
	answers := map[string]doveadmAnswer{}
	dec := json.NewDecoder(r)
	tok, err := dec.Token()
	if err != nil {
		return answers, fmt.Errorf("reading doveadm answer: %w", err)
	}
	if delim, ok := tok.(json.Delim); !ok || delim != '[' {
		return answers, errors.New("reading doveadm answer: not a JSON array")
	}
	for dec.More() {
		var element []json.RawMessage
		if err := dec.Decode(&element); err != nil {
			var typeErr *json.UnmarshalTypeError
			if errors.As(err, &typeErr) {
				// A well-formed element that is not an array: skipped.
				continue
			}
			return answers, fmt.Errorf("reading doveadm answer %d: %w", len(answers)+1, err)
		}
		tag, answer, ok := parseDoveadmElement(element)
		if !ok {
			continue
		}
		if _, seen := answers[tag]; !seen {
			answers[tag] = answer
		}
	}
	if _, err := dec.Token(); err != nil {
		return answers, fmt.Errorf("reading the end of the doveadm answer: %w", err)
	}
	return answers, nil
}

// parseDoveadmElement reads one [name, payload, tag] triple. ok is false
// when no tag can be read from it.
func parseDoveadmElement(element []json.RawMessage) (tag string, answer doveadmAnswer, ok bool) {
	if len(element) != 3 {
		return "", doveadmAnswer{}, false
	}
	var name string
	if err := json.Unmarshal(element[2], &tag); err != nil || tag == "" {
		return "", doveadmAnswer{}, false
	}
	if err := json.Unmarshal(element[0], &name); err != nil {
		return tag, doveadmAnswer{err: errors.New("doveadm answer without a name")}, true
	}
	switch name {
	case doveadmAnswerOK:
		var statuses []doveadmMailboxStatus
		if err := json.Unmarshal(element[1], &statuses); err != nil {
			return tag, doveadmAnswer{err: fmt.Errorf("reading doveadm mailbox status: %w", err)}, true
		}
		return tag, doveadmAnswer{statuses: statuses}, true
	case doveadmAnswerError:
		var payload struct {
			Type     string `json:"type"`
			ExitCode int    `json:"exitCode"`
		}
		if err := json.Unmarshal(element[1], &payload); err != nil {
			return tag, doveadmAnswer{err: fmt.Errorf("reading doveadm error: %w", err)}, true
		}
		if payload.ExitCode == exitNoUser {
			return tag, doveadmAnswer{err: sources.ErrNotServed}, true
		}
		return tag, doveadmAnswer{err: &DoveadmError{Type: sources.Clip(payload.Type), ExitCode: payload.ExitCode}}, true
	default:
		return tag, doveadmAnswer{err: fmt.Errorf("unexpected doveadm answer %q", sources.Clip(name))}, true
	}
}

// unseen is the unseen count of mailbox in the answer: the status whose
// name is mailbox (INBOX in any case), or the only status there is.
func (a doveadmAnswer) unseen(mailbox string) (int, error) {
	if a.err != nil {
		return 0, a.err
	}
	var found *doveadmMailboxStatus
	for i := range a.statuses {
		s := &a.statuses[i]
		if s.Mailbox == mailbox || (strings.EqualFold(s.Mailbox, "INBOX") && strings.EqualFold(mailbox, "INBOX")) {
			found = s
			break
		}
	}
	if found == nil && len(a.statuses) == 1 {
		found = &a.statuses[0]
	}
	if found == nil {
		return 0, fmt.Errorf("doveadm answered no status for mailbox %q", sources.Clip(mailbox))
	}
	return parseUnseen(found.Unseen)
}

// parseUnseen reads an unseen count written as a string of digits (as
// Dovecot does) or as a JSON number.
func parseUnseen(raw json.RawMessage) (int, error) {
	text := string(raw)
	if strings.HasPrefix(text, `"`) && json.Unmarshal(raw, &text) != nil {
		text = ""
	}
	n, err := strconv.ParseUint(text, 10, 32)
	if err != nil || n >= maxDoveadmUnseen {
		return 0, fmt.Errorf("doveadm answered unseen %q, not a count", sources.Clip(string(raw)))
	}
	return int(n), nil
}
