package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/devices/alerts"
)

// webhookSecretSetting is where a generated webhook secret is kept.
const webhookSecretSetting = "alerts.webhook_secret"

// openAlerts makes the alert evaluator and the webhook notifier, and loads
// the rules file. startAlerts runs them.
func (m *Main) openAlerts() error {
	cfg := m.Config
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	secret, err := m.webhookSecret(ctx)
	if err != nil {
		return err
	}
	var leader func() bool
	if l, ok := m.Store.(interface{ Leading() bool }); ok {
		leader = l.Leading // several hubs on PostgreSQL: the leader evaluates
	}
	m.Notifier = &alerts.Notifier{Store: m.Store, Secret: []byte(secret), Leader: leader, UserAgent: "telehub/" + devices.BuildVersion(),
		Logger: m.Logger.With("component", "webhooks"),
		OnAttempt: func(result string, d time.Duration) {
			m.webhookSeconds.WithLabelValues(result).Observe(d.Seconds())
		}}
	keep, _ := devices.ParseRetention(cfg.AlertRetention) // checked by Validate
	m.Alerts = &alerts.Engine{Store: m.Store, Messages: m.Store, Feed: m.Feed, Activity: m.Store.Activity, Webhooks: cfg.AlertWebhooks,
		Leader: leader, Logger: m.Logger.With("component", "alerts"), Retention: keep,
		OnChange: func(a devices.Alert) { m.Feed.Publish([]devices.Message{a.FeedMessage()}) },
		OnSaved:  m.Notifier.Wake}
	m.webhookSecretValue = secret
	if err := m.Alerts.Prepare(ctx); err != nil {
		return err
	}
	if cfg.Rules != "" {
		return m.ReloadRules(ctx)
	}
	return nil
}

// webhookSecret is --alert-webhook-secret or, without it, a key generated
// once and kept in the database (all hubs on one database share it).
func (m *Main) webhookSecret(ctx context.Context) (string, error) {
	if m.Config.AlertWebhookSecret != "" {
		return m.Config.AlertWebhookSecret, nil
	}
	v, err := m.Store.Setting(ctx, webhookSecretSetting)
	if err != nil || v != "" {
		return v, err
	}
	b := make([]byte, 32)
	rand.Read(b)
	if err := m.Store.SetSetting(ctx, webhookSecretSetting, hex.EncodeToString(b)); err != nil {
		return "", err
	}
	// Read back: another hub may have stored its own first.
	return m.Store.Setting(ctx, webhookSecretSetting)
}

// ReloadRules reads the rules file again and makes its rules the stored
// ones (SIGHUP). A file with an error changes nothing.
func (m *Main) ReloadRules(ctx context.Context) error {
	if m.Config.Rules == "" || m.Alerts == nil {
		return nil
	}
	rules, err := alerts.LoadRulesFile(m.Config.Rules)
	if err != nil {
		return fmt.Errorf("rules file: %w", err)
	}
	added, changed, removed, err := m.Alerts.SyncFileRules(ctx, rules)
	if err != nil {
		return fmt.Errorf("rules file %s: %w", m.Config.Rules, err)
	}
	m.Logger.Info("rules file loaded", "file", m.Config.Rules, "rules", len(rules), "added", added, "changed", changed, "removed", removed)
	return nil
}

func (m *Main) startAlerts() {
	ctx, cancel := context.WithCancel(context.Background())
	m.alertsStop, m.alertsDone = cancel, make(chan struct{})
	go func() {
		defer close(m.alertsDone)
		done := make(chan struct{})
		go func() { defer close(done); m.Notifier.Run(ctx) }()
		m.Alerts.Run(ctx)
		<-done
	}()
}

// stopAlerts stops the evaluator (it saves its position) and the notifier
// (pending deliveries go out at the next start).
func (m *Main) stopAlerts() {
	if m.alertsStop != nil {
		m.alertsStop()
		<-m.alertsDone
	}
}

func (m *Main) alertMetrics(reg *prometheus.Registry) {
	m.webhookSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "telehub_alert_webhook_seconds",
		Help:    "Webhook delivery attempts by result (delivered, retry, failed) and their duration.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 15), // 1 ms to 16 s
	}, []string{"result"})
	reg.MustRegister(m.webhookSeconds)
}

// alertCollector reports the alerts by status and severity, and the
// evaluator's work.
type alertCollector struct{ m *Main }

var (
	alertsDesc    = prometheus.NewDesc("telehub_alerts", "Alerts by status and severity.", []string{"status", "severity"}, nil)
	evaluatedDesc = prometheus.NewDesc("telehub_alert_rules_evaluated_total", "Rule evaluations (one message or timer check against one rule).", nil, nil)
)

func (c alertCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- alertsDesc
	ch <- evaluatedDesc
}

func (c alertCollector) Collect(ch chan<- prometheus.Metric) {
	if c.m.Alerts == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(evaluatedDesc, prometheus.CounterValue, float64(c.m.Alerts.Evaluated()))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts, err := c.m.Store.AlertCounts(ctx)
	if err != nil {
		return
	}
	for _, st := range []devices.AlertStatus{devices.AlertActive, devices.AlertAcknowledged, devices.AlertCleared} {
		for _, sev := range devices.Severities {
			ch <- prometheus.MustNewConstMetric(alertsDesc, prometheus.GaugeValue, float64(counts[st][sev]), string(st), string(sev))
		}
	}
}
