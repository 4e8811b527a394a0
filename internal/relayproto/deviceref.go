package relayproto

import (
	"crypto/sha256"
	"encoding/base32"
)

// refEncoding spells device references: lower-case base32, no padding.
var refEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// DeviceRef is the one short, non-secret reference to a device that every
// part uses in its logs and pages: "<app id>/<10 characters of a hash of the
// app id and the device address>". Ingest, the dispatcher, pushctl and the
// relay all compute it from what they already have (the recipient's app id
// and device id), so one device can be followed from its subscription to
// the push service. Device addresses can carry secrets (Web Push keys):
// log this, never the address.
func DeviceRef(appID, deviceID string) string {
	return appID + "/" + DeviceHash(appID, deviceID)[:10]
}

// DeviceHash is a hash of a device's app id and address, 26 lower-case
// base32 characters; subscription keys end with it.
func DeviceHash(appID, deviceID string) string {
	sum := sha256.Sum256([]byte(appID + "\x00" + deviceID))
	return refEncoding.EncodeToString(sum[:16])
}
