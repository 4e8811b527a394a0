package ews

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// The parts every EWS answer shares: a SOAP fault, or response messages
// with ResponseClass, ResponseCode, MessageText and MessageXml. The
// decoders of each operation (DecodeGetFolder, DecodeSubscribe) read
// them with these functions and wrap their errors with their own
// sentinel.

// readMessage checks the status of a response message: a known class, a
// response code that is a name (required for Error), the text shortened
// and the BackOffMilliseconds of MessageXml.
func readMessage(class, code, text string, mx *xmlMessageXML) (soapStatus, error) {
	st := soapStatus{class: strings.TrimSpace(class), code: strings.TrimSpace(code), text: clipAnswer(text)}
	if err := checkCode(st.code); err != nil {
		return soapStatus{}, err
	}
	backOff, err := mx.backOff()
	if err != nil {
		return soapStatus{}, err
	}
	st.backOff = backOff
	switch st.class {
	case ClassSuccess, ClassWarning:
	case ClassError:
		if st.code == "" || st.code == CodeNoError {
			return soapStatus{}, fmt.Errorf("an Error message with response code %q", st.code)
		}
	default:
		return soapStatus{}, fmt.Errorf("ResponseClass %q is not Success, Warning or Error", clipAnswer(st.class))
	}
	return st, nil
}

// readFault reads a SOAP fault: class Error, its code the detail's
// ResponseCode, or the faultcode without its prefix.
func readFault(f *xmlFault) (soapStatus, error) {
	code := strings.TrimSpace(f.Detail.ResponseCode)
	if code == "" {
		code = strings.TrimSpace(f.Code)
		if _, local, ok := strings.Cut(code, ":"); ok {
			code = local
		}
	}
	if code == "" {
		return soapStatus{}, errors.New("a fault without a code")
	}
	if err := checkCode(code); err != nil {
		return soapStatus{}, err
	}
	text := f.String
	if strings.TrimSpace(text) == "" {
		text = f.Detail.Message
	}
	backOff, err := f.Detail.MessageXML.backOff()
	if err != nil {
		return soapStatus{}, err
	}
	return soapStatus{class: ClassError, code: code, text: clipAnswer(text), backOff: backOff}, nil
}

// backOff reads the BackOffMilliseconds value, zero when absent.
func (x *xmlMessageXML) backOff() (time.Duration, error) {
	for _, v := range x.Values {
		if v.Name != backOffMillisecondsValue {
			continue
		}
		ms, err := parseInt(strings.TrimSpace(v.Value))
		if err != nil {
			return 0, fmt.Errorf("BackOffMilliseconds: %w", err)
		}
		return time.Duration(ms) * time.Millisecond, nil
	}
	return 0, nil
}

// checkCode keeps response codes to short names of letters and digits.
func checkCode(code string) error {
	if len(code) > maxCodeLen {
		return fmt.Errorf("a response code longer than %d bytes", maxCodeLen)
	}
	for _, r := range code {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return fmt.Errorf("response code %q is not a name", clipAnswer(code))
		}
	}
	return nil
}
