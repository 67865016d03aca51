// Package alerts raises alerts from rules on the hub's data and notifies
// webhooks of them.
//
// The Engine is a consumer of the store: it reads committed messages in
// sequence order (from the live feed, and from the store for whatever the
// feed did not carry), evaluates the rules, and saves what changed (alerts,
// per-(rule, device) states, webhook deliveries) together with the position
// it reached, in one transaction. It never runs inside the commit path, so
// a slow rule cannot slow ingestion, and a restart resumes from the saved
// position: no message is missed and no alert raised twice. Timer rules
// (inactivity, status, a threshold's "for", a rate's empty windows) go by
// stored times, so they survive restarts too.
//
// The Notifier delivers the webhook outbox: one worker per receiver, each
// attempt recorded, retried with backoff, signed with HMAC-SHA256.
package alerts

import (
	"strings"

	"github.com/telehub/telehub/devices"
)

// ruleSet indexes the enabled rules for the evaluator: threshold rules by
// metric, then by device (exact) or prefix; rate rules by device or
// prefix; timer rules as lists.
type ruleSet struct {
	byID       map[int64]*devices.Rule
	threshold  map[string]*scoped // by metric
	rate       scoped
	inactivity []*devices.Rule
	status     []*devices.Rule
	// webhooks are the hub's receivers, for every rule.
	webhooks []string
}

// scoped holds rules by device, and those with a prefix (or none: all).
type scoped struct {
	exact  map[string][]*devices.Rule
	prefix []*devices.Rule
}

func (s *scoped) add(r *devices.Rule) {
	if r.Device != "" {
		if s.exact == nil {
			s.exact = map[string][]*devices.Rule{}
		}
		s.exact[r.Device] = append(s.exact[r.Device], r)
		return
	}
	s.prefix = append(s.prefix, r)
}

// each calls fn for every rule that applies to device.
func (s *scoped) each(device string, fn func(*devices.Rule)) {
	for _, r := range s.exact[device] {
		fn(r)
	}
	for _, r := range s.prefix {
		if strings.HasPrefix(device, r.DevicePrefix) {
			fn(r)
		}
	}
}

func newRuleSet(rules []devices.Rule, webhooks []string) *ruleSet {
	set := &ruleSet{byID: map[int64]*devices.Rule{}, threshold: map[string]*scoped{}, webhooks: webhooks}
	for i := range rules {
		r := &rules[i]
		set.byID[r.ID] = r
		if r.Disabled {
			continue
		}
		switch r.Kind {
		case devices.RuleThreshold:
			sc := set.threshold[r.Metric]
			if sc == nil {
				sc = &scoped{}
				set.threshold[r.Metric] = sc
			}
			sc.add(r)
		case devices.RuleRate:
			set.rate.add(r)
		case devices.RuleInactivity:
			set.inactivity = append(set.inactivity, r)
		case devices.RuleStatus:
			set.status = append(set.status, r)
		}
	}
	return set
}

// receivers returns the webhooks of a rule's alerts: its own and the hub's.
func (s *ruleSet) receivers(rule int64) []string {
	out := append([]string(nil), s.webhooks...)
	if r := s.byID[rule]; r != nil && r.Webhook != "" {
		dup := false
		for _, u := range out {
			dup = dup || u == r.Webhook
		}
		if !dup {
			out = append(out, r.Webhook)
		}
	}
	return out
}

// active reports whether a rule exists and is enabled.
func (s *ruleSet) active(id int64) *devices.Rule {
	if r := s.byID[id]; r != nil && !r.Disabled {
		return r
	}
	return nil
}
