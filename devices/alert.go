package devices

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// RuleKind is what an alert rule watches.
type RuleKind string

// The kinds of rule. A threshold rule compares a metric with a value; an
// inactivity rule fires when a device sends nothing for a while; a status
// rule when a device is offline; a rate rule when a device sends more (or
// fewer) messages per interval than allowed.
const (
	RuleThreshold  RuleKind = "threshold"
	RuleInactivity RuleKind = "inactivity"
	RuleStatus     RuleKind = "status"
	RuleRate       RuleKind = "rate"
)

// Severity ranks alerts, most severe first.
type Severity string

const (
	SeverityCritical Severity = "critical"
	SeverityMajor    Severity = "major"
	SeverityMinor    Severity = "minor"
	SeverityWarning  Severity = "warning"
	SeverityInfo     Severity = "info"
)

// Severities lists every severity, most severe first.
var Severities = []Severity{SeverityCritical, SeverityMajor, SeverityMinor, SeverityWarning, SeverityInfo}

// ParseSeverity returns the severity named s, or ErrInvalid.
func ParseSeverity(s string) (Severity, error) {
	for _, sv := range Severities {
		if string(sv) == s {
			return sv, nil
		}
	}
	return "", fmt.Errorf("%w: unknown severity %q (want critical, major, minor, warning or info)", ErrInvalid, s)
}

// Rule sources: made through the API, or read from the rules file (which
// owns them: the API shows them and refuses to change them).
const (
	RuleFromAPI  = "api"
	RuleFromFile = "file"
)

// Rule is an alert rule. It applies to each matching device on its own:
// one device (Device), the devices whose id starts with DevicePrefix, or
// every device (neither set).
type Rule struct {
	ID           int64    `json:"id"`
	Name         string   `json:"name"`
	Kind         RuleKind `json:"kind"`
	Device       string   `json:"device,omitempty"`
	DevicePrefix string   `json:"device_prefix,omitempty"`
	// Threshold: the rule holds while Metric Op Value. With Clear set, an
	// alert stays raised until the value is past Clear on the other side
	// (hysteresis: "> 30, clear 28" clears below 28).
	Metric string   `json:"metric,omitempty"`
	Op     string   `json:"op,omitempty"`
	Value  *float64 `json:"value,omitempty"`
	Clear  *float64 `json:"clear,omitempty"`
	// For is how long the condition must hold before the alert is raised:
	// for a threshold the value, for inactivity the silence, for status
	// the time offline.
	For Duration `json:"for,omitempty"`
	// Rate: the device's messages are counted in windows of Interval; more
	// than Max, or fewer than Min (Min 1: none at all), raises the alert.
	Interval Duration `json:"interval,omitempty"`
	Max      *int64   `json:"max,omitempty"`
	Min      *int64   `json:"min,omitempty"`

	Severity Severity `json:"severity"`
	// Webhook receives this rule's alerts, besides the hub's webhooks.
	Webhook string `json:"webhook,omitempty"`
	// Disabled rules raise nothing; their open alerts are cleared.
	Disabled bool   `json:"disabled,omitempty"`
	Source   string `json:"source"`
	Created  int64  `json:"created"`
	Updated  int64  `json:"updated"`
}

// Limits of a rule.
const (
	MaxRuleName    = 200
	MaxWebhookURL  = 2048
	MaxRuleFor     = 365 * 24 * time.Hour
	MinRuleWindow  = time.Second
	MaxRuleWindow  = 31 * 24 * time.Hour
	maxRuleOpCount = math.MaxInt32
	maxRuleMetric  = 256
)

var ruleOps = []string{">", ">=", "<", "<=", "==", "!="}

// Validate checks r and fills its defaults (kind threshold when a metric is
// given, severity major). Errors wrap ErrInvalid and name the field.
func (r *Rule) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: rule %q: %s", ErrInvalid, r.Name, fmt.Sprintf(format, a...))
	}
	r.Name = strings.TrimSpace(r.Name)
	if r.Name == "" || len(r.Name) > MaxRuleName || !utf8.ValidString(r.Name) {
		return fmt.Errorf("%w: rule name: want 1 to %d characters", ErrInvalid, MaxRuleName)
	}
	if r.Kind == "" && r.Metric != "" {
		r.Kind = RuleThreshold
	}
	if r.Severity == "" {
		r.Severity = SeverityMajor
	}
	if _, err := ParseSeverity(string(r.Severity)); err != nil {
		return bad("severity %q: want critical, major, minor, warning or info", r.Severity)
	}
	if r.Device != "" && r.DevicePrefix != "" {
		return bad("set device or device_prefix, not both")
	}
	if r.Device != "" {
		if err := ValidateDeviceID(r.Device); err != nil {
			return bad("device: %v", err)
		}
	}
	if len(r.DevicePrefix) > MaxDeviceIDLen || strings.ContainsAny(r.DevicePrefix, "+#/") {
		return bad("device_prefix: at most %d characters, without / + #", MaxDeviceIDLen)
	}
	if r.For < 0 || time.Duration(r.For) > MaxRuleFor {
		return bad("for: want 0 to %s", MaxRuleFor)
	}
	if r.Webhook != "" {
		if err := ValidateWebhookURL(r.Webhook); err != nil {
			return bad("webhook: %v", err)
		}
	}
	switch r.Kind {
	case RuleThreshold:
		if r.Metric == "" || len(r.Metric) > maxRuleMetric {
			return bad("metric: want 1 to %d characters", maxRuleMetric)
		}
		if !validOp(r.Op) {
			return bad("op %q: want one of %s", r.Op, strings.Join(ruleOps, " "))
		}
		if r.Value == nil || !finite(*r.Value) {
			return bad("value: want a finite number")
		}
		if r.Clear != nil {
			switch {
			case !finite(*r.Clear):
				return bad("clear: want a finite number")
			case (r.Op == ">" || r.Op == ">=") && *r.Clear > *r.Value:
				return bad("clear: for %s it must not be above value", r.Op)
			case (r.Op == "<" || r.Op == "<=") && *r.Clear < *r.Value:
				return bad("clear: for %s it must not be below value", r.Op)
			case r.Op == "==" || r.Op == "!=":
				return bad("clear: only with >, >=, < or <=")
			}
		}
	case RuleInactivity:
		if r.For < Duration(MinRuleWindow) {
			return bad("for: an inactivity rule needs the silence it waits for, at least 1s")
		}
	case RuleStatus:
	case RuleRate:
		if r.Interval < Duration(MinRuleWindow) || time.Duration(r.Interval) > MaxRuleWindow {
			return bad("interval: want 1s to %s", MaxRuleWindow)
		}
		if r.Max == nil && r.Min == nil {
			return bad("set max, min or both")
		}
		if r.Max != nil && (*r.Max < 0 || *r.Max > maxRuleOpCount) || r.Min != nil && (*r.Min < 1 || *r.Min > maxRuleOpCount) {
			return bad("max: want 0 or more; min: want 1 or more")
		}
		if r.Max != nil && r.Min != nil && *r.Min > *r.Max {
			return bad("min must not be above max")
		}
	case "":
		return bad("kind: want threshold, inactivity, status or rate")
	default:
		return bad("kind %q: want threshold, inactivity, status or rate", r.Kind)
	}
	if r.Kind != RuleThreshold && (r.Metric != "" || r.Op != "" || r.Value != nil || r.Clear != nil) {
		return bad("metric, op, value and clear are for threshold rules")
	}
	if r.Kind != RuleRate && (r.Interval != 0 || r.Max != nil || r.Min != nil) {
		return bad("interval, max and min are for rate rules")
	}
	return nil
}

// ValidateWebhookURL accepts an absolute http or https URL.
func ValidateWebhookURL(s string) error {
	if len(s) > MaxWebhookURL {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalid, MaxWebhookURL)
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: want an http:// or https:// URL", ErrInvalid)
	}
	return nil
}

func validOp(op string) bool {
	for _, o := range ruleOps {
		if o == op {
			return true
		}
	}
	return false
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// Matches reports whether the rule applies to a device.
func (r *Rule) Matches(device string) bool {
	switch {
	case r.Device != "":
		return device == r.Device
	default:
		return strings.HasPrefix(device, r.DevicePrefix)
	}
}

// Holds reports whether a threshold rule's condition holds for v.
func (r *Rule) Holds(v float64) bool {
	t := *r.Value
	switch r.Op {
	case ">":
		return v > t
	case ">=":
		return v >= t
	case "<":
		return v < t
	case "<=":
		return v <= t
	case "==":
		return v == t
	case "!=":
		return v != t
	}
	return false
}

// Clears reports whether v ends a raised threshold alert: the condition no
// longer holds and, with hysteresis, v is past Clear.
func (r *Rule) Clears(v float64) bool {
	if r.Clear == nil {
		return !r.Holds(v)
	}
	switch r.Op {
	case ">", ">=":
		return v < *r.Clear
	default:
		return v > *r.Clear
	}
}

// Describe says in words what a rule's alert means, for the alert's
// message.
func (r *Rule) Describe(value *float64) string {
	switch r.Kind {
	case RuleThreshold:
		s := r.Metric + " " + r.Op + " " + strconv.FormatFloat(*r.Value, 'g', -1, 64)
		if value != nil {
			s = r.Metric + " is " + strconv.FormatFloat(*value, 'g', -1, 64) + " (" + r.Op + " " + strconv.FormatFloat(*r.Value, 'g', -1, 64) + ")"
		}
		if r.For > 0 {
			s += " for " + r.For.String()
		}
		return s
	case RuleInactivity:
		return "no message for " + r.For.String()
	case RuleStatus:
		if r.For > 0 {
			return "offline for " + r.For.String()
		}
		return "offline"
	case RuleRate:
		n := ""
		if value != nil {
			n = strconv.FormatFloat(*value, 'f', 0, 64) + " messages in " + r.Interval.String() + ", "
		}
		switch {
		case r.Max != nil && r.Min != nil:
			return n + "want " + strconv.FormatInt(*r.Min, 10) + " to " + strconv.FormatInt(*r.Max, 10)
		case r.Max != nil:
			return n + "want at most " + strconv.FormatInt(*r.Max, 10)
		default:
			return n + "want at least " + strconv.FormatInt(*r.Min, 10)
		}
	}
	return string(r.Kind)
}

// Duration is a time.Duration that JSON and rule files write as a string
// ("30s", "5m", "2h", "1d") and that also reads a number of seconds.
type Duration time.Duration

func (d Duration) String() string {
	t := time.Duration(d)
	if t >= 24*time.Hour && t%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(t/(24*time.Hour)), 10) + "d"
	}
	s := t.String()
	// 5m0s reads better as 5m.
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := ParseDuration(s)
		*d = Duration(v)
		return err
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil || !finite(secs) || secs < 0 || secs > MaxRuleFor.Seconds() {
		return fmt.Errorf("%w: duration: want a string such as \"30s\" or a number of seconds", ErrInvalid)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// ParseDuration reads "0", a Go duration ("90s", "1h30m") or days and weeks
// ("1d", "2w"), like ParseRetention.
func ParseDuration(s string) (time.Duration, error) {
	d, err := ParseRetention(s)
	if err != nil {
		return 0, fmt.Errorf("%w: duration %q: want 0, a duration such as 30s or 5m, or days (1d)", ErrInvalid, s)
	}
	return d, nil
}

// AlertStatus is where an alert is in its life: active, then perhaps
// acknowledged by a person, then cleared (when its condition ended, or by
// hand). A cleared alert stays cleared: the next trigger raises a new one.
type AlertStatus string

const (
	AlertActive       AlertStatus = "active"
	AlertAcknowledged AlertStatus = "acknowledged"
	AlertCleared      AlertStatus = "cleared"
)

// ParseAlertStatus reads a status filter: one status, or "open" (active or
// acknowledged).
func ParseAlertStatus(s string) (AlertStatus, error) {
	switch AlertStatus(s) {
	case AlertActive, AlertAcknowledged, AlertCleared, AlertOpen:
		return AlertStatus(s), nil
	}
	return "", fmt.Errorf("%w: unknown alert status %q (want active, acknowledged, cleared or open)", ErrInvalid, s)
}

// AlertOpen selects, in a filter, the alerts that are not cleared.
const AlertOpen AlertStatus = "open"

// Alert is raised for one (rule, device) while the rule's condition holds.
// There is at most one open (not cleared) alert per (rule, device).
type Alert struct {
	ID       int64       `json:"id"`
	RuleID   int64       `json:"rule_id"`
	Rule     string      `json:"rule"`
	Kind     RuleKind    `json:"kind"`
	Device   string      `json:"device"`
	Severity Severity    `json:"severity"`
	Status   AlertStatus `json:"status"`
	Message  string      `json:"message"`
	Metric   string      `json:"metric,omitempty"`
	// FirstValue and FirstAt are the trigger that raised the alert,
	// LastValue and LastAt the latest trigger; Count counts the triggers
	// (1 when raised). Times are Unix ms.
	FirstValue *float64 `json:"first_value,omitempty"`
	FirstAt    int64    `json:"first_at"`
	LastValue  *float64 `json:"last_value,omitempty"`
	LastAt     int64    `json:"last_at"`
	Count      int64    `json:"count"`
	Created    int64    `json:"created"`
	Updated    int64    `json:"updated"`
	AckedBy    string   `json:"acked_by,omitempty"`
	AckedAt    int64    `json:"acked_at,omitempty"`
	AckNote    string   `json:"ack_note,omitempty"`
	ClearedBy  string   `json:"cleared_by,omitempty"`
	ClearedAt  int64    `json:"cleared_at,omitempty"`
	// History lists every change of status, oldest first (single reads).
	History []AlertEvent `json:"history,omitempty"`
	// Deliveries are its webhook notifications (single reads).
	Deliveries []Delivery `json:"deliveries,omitempty"`
}

// FeedMessage is a as the live feed carries it (kind KindAlert, no
// sequence number, the alert without its history as payload).
func (a Alert) FeedMessage() Message {
	a.History, a.Deliveries = nil, nil
	payload, _ := json.Marshal(a)
	return Message{Device: a.Device, Topic: "$telehub/alerts/" + a.Device, Kind: KindAlert, TS: a.Updated, Received: a.Updated, Payload: payload}
}

// Open reports whether the alert is not cleared.
func (a *Alert) Open() bool { return a.Status != AlertCleared }

// AlertEvent is one change of an alert's status.
type AlertEvent struct {
	ID     int64       `json:"id"`
	Status AlertStatus `json:"status"`
	At     int64       `json:"at"`
	By     string      `json:"by,omitempty"`
	Note   string      `json:"note,omitempty"`
	Value  *float64    `json:"value,omitempty"`
}

// DeliveryStatus is where a webhook notification is.
type DeliveryStatus string

const (
	DeliveryPending   DeliveryStatus = "pending"
	DeliveryDelivered DeliveryStatus = "delivered"
	DeliveryFailed    DeliveryStatus = "failed" // gave up
)

// Delivery is one notification of one alert change to one webhook,
// retried until the receiver answers 2xx or the hub gives up. Key, the
// same on every attempt and for every receiver of the change, lets a
// receiver drop repeats.
type Delivery struct {
	ID        int64             `json:"id"`
	AlertID   int64             `json:"alert_id"`
	Event     AlertStatus       `json:"event"`
	URL       string            `json:"url"`
	Key       string            `json:"key"`
	Status    DeliveryStatus    `json:"status"`
	Attempts  int               `json:"attempts"`
	NextAt    int64             `json:"next_at,omitempty"`
	Created   int64             `json:"created"`
	Updated   int64             `json:"updated"`
	LastError string            `json:"last_error,omitempty"`
	Payload   json.RawMessage   `json:"-"`
	Log       []DeliveryAttempt `json:"attempts_log,omitempty"`
}

// DeliveryAttempt is one try at a delivery.
type DeliveryAttempt struct {
	At     int64  `json:"at"`
	Code   int    `json:"code,omitempty"` // HTTP status, 0 when none came
	Error  string `json:"error,omitempty"`
	Millis int64  `json:"ms"`
}

// DeliveryResult is one attempt at a delivery and what it made of it: the
// delivery's new status and, pending, when to try again (Unix ms).
type DeliveryResult struct {
	ID      int64
	Attempt DeliveryAttempt
	Status  DeliveryStatus
	NextAt  int64
}

// AlertFilter selects alerts, newest first.
type AlertFilter struct {
	Status   AlertStatus // "" for all, AlertOpen for not cleared
	Severity Severity
	Device   string
	RuleID   int64
	Before   int64 // keyset: ids below this one
	Limit    int
}

// MaxAlertList caps AlertFilter.Limit.
const MaxAlertList = 1000

// RuleState is what the evaluator keeps about one (rule, device) between
// messages, saved with its position so a restart goes on where it was.
type RuleState struct {
	Rule   int64
	Device string
	// Since is when a threshold's condition started to hold (0: it does
	// not); Value the latest value seen.
	Since int64
	Value *float64
	// Window and Count are a rate rule's current window start and its
	// messages so far.
	Window int64
	Count  int64
}

// AlertEngineState is what the evaluator resumes from.
type AlertEngineState struct {
	// Seq is the last message evaluated; Started is false when no
	// position was ever saved (a database the evaluator never ran on).
	Seq     Seq
	Started bool
	Open    []Alert
	States  []RuleState
}

// AlertStep is the evaluator's work on a run of messages and timer ticks,
// saved in one transaction: alerts raised, updated and cleared, the
// per-(rule, device) states that changed, and the position reached.
type AlertStep struct {
	Seq     Seq
	Raised  []*Alert
	Updated []*Alert // Count, LastValue, LastAt changed
	Cleared []*Alert // Status cleared, ClearedBy, ClearedAt set
	States  []RuleState
	Dropped []RuleState // states to forget (Rule and Device set)
	// Webhooks gives the receivers of a rule's alerts.
	Webhooks func(rule int64) []string
	// Payload renders a delivery's body for an alert change.
	Payload func(a *Alert, ev AlertEvent, key string) []byte
}

// Empty reports whether the step changes nothing but the position.
func (s *AlertStep) Empty() bool {
	return len(s.Raised)+len(s.Updated)+len(s.Cleared)+len(s.States)+len(s.Dropped) == 0
}

// AlertStore keeps rules, alerts and their notifications.
type AlertStore interface {
	// CreateRule stores a new rule (ErrConflict when the name is taken);
	// UpdateRule replaces one by id (ErrNotFound); DeleteRule deletes one
	// and its states, and clears its open alerts.
	CreateRule(ctx context.Context, r Rule) (*Rule, error)
	UpdateRule(ctx context.Context, r Rule) (*Rule, error)
	DeleteRule(ctx context.Context, id int64, at int64) error
	Rule(ctx context.Context, id int64) (*Rule, error)
	Rules(ctx context.Context) ([]Rule, error)
	// SyncFileRules makes the rules from the rules file exactly rules
	// (matched by name): new ones are added, changed ones updated, missing
	// ones deleted. API rules keep their names: a clash is ErrConflict.
	SyncFileRules(ctx context.Context, rules []Rule, at int64) (added, changed, removed int, err error)

	// LoadAlertEngine reads what the evaluator resumes from.
	LoadAlertEngine(ctx context.Context) (*AlertEngineState, error)
	// SaveAlertStep saves a step in one transaction and fills in the ids of
	// the alerts raised. Deliveries are created for every change, to
	// step.Webhooks of the alert's rule. An update or clear of an alert
	// that is cleared already (by hand) changes nothing; it is returned in
	// gone.
	SaveAlertStep(ctx context.Context, step *AlertStep) (gone []int64, err error)

	// Alert returns one alert with its history and deliveries.
	Alert(ctx context.Context, id int64) (*Alert, error)
	ListAlerts(ctx context.Context, f AlertFilter) ([]Alert, error)
	// AckAlert acknowledges an open alert, ClearAlert clears one; both
	// return ErrNotFound for an unknown alert and ErrConflict for one in
	// the wrong state, and create deliveries to webhooks.
	AckAlert(ctx context.Context, id int64, by, note string, at int64, webhooks func(rule int64) []string, payload func(a *Alert, ev AlertEvent, key string) []byte) (*Alert, error)
	ClearAlert(ctx context.Context, id int64, by, note string, at int64, webhooks func(rule int64) []string, payload func(a *Alert, ev AlertEvent, key string) []byte) (*Alert, error)
	// PruneAlerts deletes up to limit alerts cleared before before (Unix
	// ms), with their history, deliveries and attempts, and returns how
	// many went.
	PruneAlerts(ctx context.Context, before int64, limit int) (int64, error)
	// AlertCounts counts the alerts by status and severity.
	AlertCounts(ctx context.Context) (map[AlertStatus]map[Severity]int, error)

	// DueReceivers lists the webhook URLs with deliveries whose time has
	// come; DueDeliveries returns those of one URL, oldest first;
	// RecordDeliveries saves attempts and the deliveries' new states, in
	// one transaction.
	DueReceivers(ctx context.Context, now int64, limit int) ([]string, error)
	DueDeliveries(ctx context.Context, url string, now int64, limit int) ([]Delivery, error)
	RecordDeliveries(ctx context.Context, results []DeliveryResult) error

	// Setting and SetSetting keep small named values of the hub (such as
	// the webhook signing secret); Setting returns "" when unset.
	Setting(ctx context.Context, name string) (string, error)
	SetSetting(ctx context.Context, name, value string) error
}
