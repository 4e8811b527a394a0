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
// Facts checked against the published schema (MS-OXWSNTIF 2.2.4):
// t:BaseNotificationEventType has an optional Watermark; every event but
// StatusEvent extends it with TimeStamp, a choice of FolderId or ItemId,
// and ParentFolderId; MovedEvent and CopiedEvent add a choice of
// OldFolderId or OldItemId, and OldParentFolderId; ModifiedEvent adds an
// optional UnreadCount (xs:int). t:NotificationType lists SubscriptionId,
// optional PreviousWatermark and MoreEvents, then any number of events in
// any order. A response message of class Error (e.g. ErrorReadEventsFailed)
// carries the subscription id in m:MessageXml/t:Value[@Name="SubscriptionId"]
// and no notification.
package ews
