// Package graph is the Microsoft Graph change notification source of
// ingest: the validationToken handshake, the clientState check, and the
// mapping of message notifications to mailbox events. With an app-only
// token it also reads exact unread counts (Counter) and keeps the
// subscriptions that make Graph send the notifications (Manager).
//
// Graph POSTs a changeNotificationCollection to the subscription's
// notificationUrl:
//
//	{"value":[{"subscriptionId":"...","subscriptionExpirationDateTime":"...",
//	  "clientState":"<secret>","changeType":"created",
//	  "resource":"Users/{user id}/Messages/{message id}","tenantId":"<guid>",
//	  "resourceData":{"@odata.type":"#Microsoft.Graph.Message",
//	                  "@odata.id":"Users/{user id}/Messages/{message id}","id":"{message id}"}}]}
//
// and lifecycle notifications (reauthorizationRequired, subscriptionRemoved,
// missed) with "lifecycleEvent" instead of a change, to the
// lifecycleNotificationUrl, which may be the same URL. Graph counts any 2xx
// answer given within 3 seconds as delivered and retries anything else for
// up to 4 hours.
package graph

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/pushproxy/pushproxy/internal/sources"
)

// Collection is a changeNotificationCollection. ValidationTokens come only
// with notifications that include resource data, which pushproxy does not
// subscribe to.
type Collection struct {
	Value            []Notification `json:"value"`
	ValidationTokens []string       `json:"validationTokens,omitempty"`
}

// Notification is one changeNotification: a change of a resource, or a
// lifecycle notification when LifecycleEvent is set.
type Notification struct {
	ID                             string        `json:"id,omitempty"`
	SubscriptionID                 string        `json:"subscriptionId"`
	SubscriptionExpirationDateTime string        `json:"subscriptionExpirationDateTime,omitempty"`
	ClientState                    string        `json:"clientState,omitempty"`
	ChangeType                     string        `json:"changeType,omitempty"`
	Resource                       string        `json:"resource,omitempty"`
	ResourceData                   *ResourceData `json:"resourceData,omitempty"`
	TenantID                       string        `json:"tenantId,omitempty"`
	LifecycleEvent                 string        `json:"lifecycleEvent,omitempty"`
}

// ResourceData identifies the changed resource.
type ResourceData struct {
	ODataType string `json:"@odata.type,omitempty"`
	ODataID   string `json:"@odata.id,omitempty"`
	ODataEtag string `json:"@odata.etag,omitempty"`
	ID        string `json:"id,omitempty"`
}

// Change types of a changeNotification.
const (
	ChangeCreated = "created"
	ChangeUpdated = "updated"
	ChangeDeleted = "deleted"
)

// Lifecycle events of a lifecycle notification.
const (
	LifecycleReauthorizationRequired = "reauthorizationRequired"
	LifecycleSubscriptionRemoved     = "subscriptionRemoved"
	LifecycleMissed                  = "missed"
)

// DefaultMaxNotifications bounds the notifications of one request.
const DefaultMaxNotifications = 1000

// Decode reads a changeNotificationCollection. A body that is not a JSON
// object with a "value" array, or that has more than max notifications
// (DefaultMaxNotifications when max is 0), is a request-level error
// (*httpjson.Error, 400 or 413). Fields Graph may add later are ignored.
func Decode(body []byte, max int) (*Collection, error) {
	if max <= 0 {
		max = DefaultMaxNotifications
	}
	if err := sources.Object(body); err != nil {
		return nil, err
	}
	var raw struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, sources.Malformed("%v", err)
	}
	if len(raw.Value) == 0 || string(raw.Value) == "null" {
		return nil, sources.Malformed(`the body has no "value" array of change notifications`)
	}
	var c Collection
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, sources.Malformed("the body is not a change notification collection: %v", err)
	}
	if len(c.Value) > max {
		return nil, sources.TooLarge("%d notifications in one request (at most %d)", len(c.Value), max)
	}
	return &c, nil
}

// Resource is what a notification's resource path names: a message of a
// user, possibly in a mail folder.
type Resource struct {
	// UserID is the user segment as Graph wrote it: an object id, an
	// "{object id}@{tenant id}" pair, or a user principal name.
	UserID string
	// Folder is the mail folder id or well-known name, or "" when the path
	// names none (Graph usually writes Users/{id}/Messages/{id}).
	Folder string
	// MessageID is the message id, or "" when the path ends at messages.
	MessageID string
}

// MaxResourceLen bounds a resource path.
const MaxResourceLen = 2048

// ParseResource reads a resource path such as "Users/{id}/Messages/{id}",
// "users/{id}/mailFolders('Inbox')/messages/{id}" or the OData key form
// "Users('{id}')/Messages('{id}')". Segment names compare case-insensitively;
// a leading slash and a "v1.0/" or "beta/" prefix are allowed.
func ParseResource(path string) (Resource, error) {
	if path == "" || len(path) > MaxResourceLen || !utf8.ValidString(path) {
		return Resource{}, fmt.Errorf("resource must be non-empty UTF-8 of at most %d bytes", MaxResourceLen)
	}
	segs := segments(strings.TrimPrefix(path, "/"))
	if len(segs) > 0 && !segs[0].hasKey && (strings.EqualFold(segs[0].name, "v1.0") || strings.EqualFold(segs[0].name, "beta")) {
		segs = segs[1:]
	}
	var res Resource
	// take consumes segment name and its key: name('key') or name/key.
	take := func(name string) (key string, found bool) {
		if len(segs) == 0 || !strings.EqualFold(segs[0].name, name) {
			return "", false
		}
		s := segs[0]
		segs = segs[1:]
		if s.hasKey {
			return s.key, true
		}
		if len(segs) == 0 || segs[0].hasKey {
			return "", true
		}
		key = segs[0].name
		segs = segs[1:]
		return key, true
	}
	var found bool
	if res.UserID, found = take("users"); !found || res.UserID == "" {
		return Resource{}, fmt.Errorf("resource %q does not start with users/{id}", sources.Clip(path))
	}
	if res.Folder, found = take("mailFolders"); found && res.Folder == "" {
		return Resource{}, fmt.Errorf("resource %q names mailFolders without an id", sources.Clip(path))
	}
	if res.MessageID, found = take("messages"); !found {
		return Resource{}, fmt.Errorf("resource %q is not a message (users/{id}/messages/{id})", sources.Clip(path))
	}
	if len(segs) != 0 {
		return Resource{}, fmt.Errorf("resource %q has more after the message", sources.Clip(path))
	}
	for _, v := range []string{res.UserID, res.Folder, res.MessageID} {
		if err := checkToken(v); err != nil {
			return Resource{}, fmt.Errorf("resource %q: %w", sources.Clip(path), err)
		}
	}
	return res, nil
}

// segment is one path segment: name, or name('key') in OData key syntax.
type segment struct {
	name, key string
	hasKey    bool
}

func segments(path string) []segment {
	var out []segment
	for _, p := range strings.Split(path, "/") {
		if p == "" {
			continue
		}
		s := segment{name: p}
		if i := strings.IndexByte(p, '('); i > 0 && strings.HasSuffix(p, ")") {
			s = segment{name: p[:i], key: strings.Trim(p[i+1:len(p)-1], "'"), hasKey: true}
		}
		out = append(out, s)
	}
	return out
}

// checkToken keeps white space and control characters out of an id.
func checkToken(s string) error {
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return fmt.Errorf("an id holds white space or a control character")
		}
	}
	return nil
}
