package ews

import (
	"bytes"
	"encoding/xml"
	"net/http"
)

// Status is the SubscriptionStatus of an answer (m:SubscriptionStatusType).
type Status string

// The two statuses a push client can answer.
const (
	// StatusOK keeps the subscription.
	StatusOK Status = "OK"
	// StatusUnsubscribe makes Exchange end the subscription.
	StatusUnsubscribe Status = "Unsubscribe"
)

// ContentType is the media type of SOAP 1.1 messages, requests and answers.
const ContentType = "text/xml; charset=utf-8"

// ResultEnvelope is the answer to a SendNotification request
// (tns:SendNotificationSoapOut, MS-OXWSPSNTIF 3.1.4.1.1.2):
//
//	<?xml version="1.0" encoding="utf-8"?>
//	<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">
//	  <s:Body>
//	    <SendNotificationResult xmlns="http://schemas.microsoft.com/exchange/services/2006/messages">
//	      <SubscriptionStatus>OK</SubscriptionStatus>
//	    </SendNotificationResult>
//	  </s:Body>
//	</s:Envelope>
func ResultEnvelope(s Status) []byte {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?>` + "\n")
	b.WriteString(`<s:Envelope xmlns:s="` + SOAPNamespace + `">` + "\n")
	b.WriteString("  <s:Body>\n")
	b.WriteString(`    <SendNotificationResult xmlns="` + MessagesNamespace + `">` + "\n")
	b.WriteString("      <SubscriptionStatus>")
	_ = xml.EscapeText(&b, []byte(s))
	b.WriteString("</SubscriptionStatus>\n")
	b.WriteString("    </SendNotificationResult>\n")
	b.WriteString("  </s:Body>\n")
	b.WriteString("</s:Envelope>\n")
	return b.Bytes()
}

// SOAP 1.1 fault codes: the sender's fault, or ours.
const (
	FaultClient = "s:Client"
	FaultServer = "s:Server"
)

// FaultEnvelope is a SOAP 1.1 fault with code (FaultClient or FaultServer)
// and a human-readable reason:
//
//	<?xml version="1.0" encoding="utf-8"?>
//	<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">
//	  <s:Body>
//	    <s:Fault>
//	      <faultcode>s:Client</faultcode>
//	      <faultstring xml:lang="en">...</faultstring>
//	    </s:Fault>
//	  </s:Body>
//	</s:Envelope>
func FaultEnvelope(code, reason string) []byte {
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?>` + "\n")
	b.WriteString(`<s:Envelope xmlns:s="` + SOAPNamespace + `">` + "\n")
	b.WriteString("  <s:Body>\n")
	b.WriteString("    <s:Fault>\n")
	b.WriteString("      <faultcode>")
	_ = xml.EscapeText(&b, []byte(code))
	b.WriteString("</faultcode>\n")
	b.WriteString(`      <faultstring xml:lang="en">`)
	_ = xml.EscapeText(&b, []byte(reason))
	b.WriteString("</faultstring>\n")
	b.WriteString("    </s:Fault>\n")
	b.WriteString("  </s:Body>\n")
	b.WriteString("</s:Envelope>\n")
	return b.Bytes()
}

func writeSOAP(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", ContentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
