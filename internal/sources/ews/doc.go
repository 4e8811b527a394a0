// Package ews is the EWS push notification source of ingest
// (MS-OXWSPSNTIF): Exchange POSTs a SOAP 1.1 SendNotification request
// (text/xml; charset=utf-8, SOAPAction
// http://schemas.microsoft.com/exchange/services/2006/messages/SendNotification)
// to the URL given when the push subscription was created, and expects a
// SendNotificationResult whose SubscriptionStatus is OK, or Unsubscribe to
// end the subscription.
//
// Decode reads the request (namespaces, not prefixes, are matched; elements
// it does not know are skipped); Map turns the events of one notification
// into mailbox events (see Map for the rules); Source plugs both into
// ingest, with a SubscriptionRegistry that tells whose mailbox a
// subscription watches. StaticRegistry is a registry read from a JSON file.
//
// Manager makes and keeps the push subscriptions itself, one on the Inbox
// of each mailbox of a list (MailboxFile): Subscribe with a
// PushSubscriptionRequest (SubscribeRequest, DecodeSubscribe) after one
// GetFolder for the Inbox's folder id, with the Counter's server and
// credentials. It is then the source's registry, and the source tells it
// of every notification it stored (Config.Observe) and of every error
// (Config.OnSubscriptionError). Its state (SubscriptionState: id, newest
// watermark, Inbox folder id, last notification) survives restarts in a
// SubscriptionStore, in memory or in the NATS KV bucket
// SubscriptionBucket. Because a push subscription cannot be probed, it is
// made again from its last watermark after a restart, after twice its
// StatusFrequency without a notification, and after an error
// notification; a refused watermark makes it subscribe afresh and ask for
// the count to be read again (ManagerConfig.Resync).
//
// The Counter and the Manager sign in with Basic, with NTLM (NTLM set:
// the Basic credentials answer the server's NTLMv2 challenge through
// package ntlm, for Exchange on premises with Windows authentication
// only) or with app-only OAuth tokens (Tokens, always impersonating).
//
// Facts checked against the published schema (MS-OXWSNTIF 2.2.4):
// t:BaseNotificationEventType has an optional Watermark; every event but
// StatusEvent extends it with TimeStamp, a choice of FolderId or ItemId,
// and ParentFolderId; MovedEvent and CopiedEvent add a choice of
// OldFolderId or OldItemId, and OldParentFolderId; ModifiedEvent adds an
// optional UnreadCount (xs:int). t:NotificationType lists SubscriptionId,
// optional PreviousWatermark and MoreEvents, then any number of events in
// any order. A response message of class Error (e.g. ErrorReadEventsFailed)
// carries the subscription id in m:MessageXml/t:Value[@Name="SubscriptionId"]
// and no notification. A Subscribe answer (MS-OXWSNTIF 2.2.4.3) is an
// m:SubscribeResponseMessage whose optional m:SubscriptionId and
// m:Watermark follow the common response message parts; the
// t:PushSubscriptionRequestType asked for (3.1.4.3.3.6) lists FolderIds,
// EventTypes, an optional Watermark, StatusFrequency (1 to 1440 minutes)
// and URL, in that order.
package ews
