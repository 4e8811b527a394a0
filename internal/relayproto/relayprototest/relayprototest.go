// Package relayprototest answers relay requests for the fake relays of
// tests. Nothing here is fit for production.
package relayprototest

import "github.com/pushproxy/pushproxy/internal/relayproto"

// Answer is a relay's answer to req: a result for each notification, in
// which each recipient (device) has the status status gives it.
func Answer(req relayproto.Request, status func(relayproto.Recipient) relayproto.DeviceStatus) relayproto.Response {
	var resp relayproto.Response
	for _, n := range req.Notifications {
		res := relayproto.NotificationResult{ID: n.ID}
		for _, rc := range n.Recipients {
			res.Devices = append(res.Devices, relayproto.DeviceResult{AppID: rc.AppID, DeviceID: rc.DeviceID, Status: status(rc)})
		}
		resp.Results = append(resp.Results, res)
	}
	return resp
}

// Delivered is the status of every device in a relay's answer when all are
// delivered, for Answer.
func Delivered(relayproto.Recipient) relayproto.DeviceStatus { return relayproto.DeviceDelivered }
