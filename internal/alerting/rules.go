package alerting

import "time"

// Names of the monitor's rules.
const (
	// RuleDeadLetters: dead letters wait in the PUSH_DEAD stream. It fires
	// while any is there and resolves only once they are redriven or
	// discarded (pushctl dlq): the badges they carry are stale until then.
	RuleDeadLetters = "PushDeadLetters"
	// RuleEventsAbandoned: the MAIL consumer gave up on events
	// (MAX_DELIVERIES or MSG_TERMINATED advisories).
	RuleEventsAbandoned = "PushEventsAbandoned"
	// RuleProbeFailing: the connectivity probe to the relay fails.
	RuleProbeFailing = "PushProbeFailing"
	// RuleCanaryFailing: the end-to-end canary did not come out as a push.
	RuleCanaryFailing = "PushCanaryFailing"
	// RuleCertificateExpiring: an S2S signing certificate expires soon.
	RuleCertificateExpiring = "PushCertificateExpiring"
	// RuleSubscriptionsPruned: many device subscriptions were removed
	// because the relay reported the devices gone.
	RuleSubscriptionsPruned = "PushSubscriptionsPruned"
)

// CertificateWarning is how long before its expiry a signing certificate
// raises RuleCertificateExpiring.
const CertificateWarning = 30 * 24 * time.Hour

// DefaultRules are the monitor's rules with their default thresholds.
func DefaultRules() []Rule {
	return []Rule{
		{
			Name: RuleDeadLetters, Severity: SeverityWarning, Kind: KindState,
			Threshold: 1, CoolDown: 0,
			Summary: "Dead letters wait: some users' badges are stale until they are redriven or discarded",
			Runbook: "Run pushctl dlq list to see the reasons; fix the cause, then pushctl dlq redrive (or pushctl dlq purge).",
		},
		{
			Name: RuleEventsAbandoned, Severity: SeverityWarning, Kind: KindRate,
			Threshold: 1, Window: 5 * time.Minute, CoolDown: 10 * time.Minute,
			Summary: "The dispatcher gave up on mailbox events (max deliveries reached or terminated)",
			Runbook: "Check the dispatcher logs and the ADVISORIES stream; pushctl replay --user shows a user's events.",
		},
		{
			Name: RuleProbeFailing, Severity: SeverityCritical, Kind: KindState,
			Threshold: 2, CoolDown: 0,
			Summary: "The connectivity probe to the relay fails",
			Runbook: "Run pushctl probe: its Error line says what to fix (settings, network or authentication).",
		},
		{
			Name: RuleCanaryFailing, Severity: SeverityCritical, Kind: KindState,
			Threshold: 2, CoolDown: 0,
			Summary: "The end-to-end canary event did not come out as a push in time",
			Runbook: "Check pushctl status (consumers, pending counts, workers) and the dispatcher logs.",
		},
		{
			Name: RuleCertificateExpiring, Severity: SeverityWarning, Kind: KindState,
			Threshold: 1, CoolDown: 0,
			Summary: "An S2S signing certificate expires within 30 days",
			Runbook: "Create a next certificate (pushctl auth new-certificate), register it at the relay, then rotate.",
		},
		{
			Name: RuleSubscriptionsPruned, Severity: SeverityWarning, Kind: KindRate,
			Threshold: 50, Window: 10 * time.Minute, CoolDown: 10 * time.Minute,
			Summary: "Many device subscriptions were removed because the push services reported the devices gone",
			Runbook: "Check the relay's app credentials (APNs topic and environment, FCM project): a wrong one makes every device look gone.",
		},
	}
}
