package main

import (
	"context"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/telehub/telehub/devices"
)

var (
	descReceived = prometheus.NewDesc("telehub_messages_received_total", "Publishes taken from MQTT on a device topic.", nil, nil)
	descStored   = prometheus.NewDesc("telehub_messages_stored_total", "Messages committed to the database.", nil, nil)
	descFlagged  = prometheus.NewDesc("telehub_messages_flagged_total", "Stored messages whose payload the decoder flagged (not JSON, bad ts, ...).", nil, nil)
	descRejected = prometheus.NewDesc("telehub_messages_rejected_total", "Messages not stored, by reason.", []string{"reason"}, nil)
	descRefused  = prometheus.NewDesc("telehub_refused_total", "Connections and requests turned away (credentials, limits, origin), by reason.", []string{"reason"}, nil)
	descQueue    = prometheus.NewDesc("telehub_ingest_queue_length", "Messages waiting for the writer.", nil, nil)
	descCommit   = prometheus.NewDesc("telehub_last_commit_seconds", "Duration of the latest commit.", nil, nil)
	descSeq      = prometheus.NewDesc("telehub_last_seq", "Highest committed sequence number.", nil, nil)
	descClients  = prometheus.NewDesc("telehub_mqtt_clients", "Clients connected to the embedded broker.", nil, nil)
	descWS       = prometheus.NewDesc("telehub_websocket_clients", "Open WebSocket connections.", nil, nil)
	descResyncs  = prometheus.NewDesc("telehub_websocket_resyncs_total", "Times a WebSocket client fell behind the live feed and was caught up from the database.", nil, nil)
	descWSSlow   = prometheus.NewDesc("telehub_websocket_slow_disconnects_total", "WebSocket clients disconnected for not keeping up.", nil, nil)
	descDevices  = prometheus.NewDesc("telehub_devices", "Devices known to the hub.", nil, nil)
	descConnDev  = prometheus.NewDesc("telehub_devices_connected", "Devices with a live connection to the embedded broker.", nil, nil)
	descDBBytes  = prometheus.NewDesc("telehub_database_bytes", "Size of the database file and its WAL.", nil, nil)
	descFwdDrop  = prometheus.NewDesc("telehub_mqtt_forward_dropped_total", "Messages not forwarded to an MQTT subscriber whose write queue was full (they are stored all the same).", nil, nil)
	descFailures = prometheus.NewDesc("telehub_commit_failures_total", "Commit attempts that failed (disk full, read-only, I/O error); each is retried and nothing is acknowledged meanwhile.", nil, nil)
	descRollDrop = prometheus.NewDesc("telehub_rollup_buckets_dropped_total", "Rollup buckets that could not be written and were left out.", nil, nil)
	descCmds     = prometheus.NewDesc("telehub_commands_total", "Command status changes since start, by the status entered (queued, sent, delivered, replied, expired, failed, cancelled).", []string{"status"}, nil)
	descCmdRef   = prometheus.NewDesc("telehub_commands_refused_total", "Commands refused because their device had --max-pending-commands waiting.", nil, nil)
	descCmdOpen  = prometheus.NewDesc("telehub_commands_open", "Commands waiting for their device or its answer (the queue), by status: queued, sent, delivered (a delivered one-way command has ended).", []string{"status"}, nil)
	descReady    = prometheus.NewDesc("telehub_ready", "1 when the hub can take and store messages (as /readyz), else 0.", nil, nil)
)

// hubCollector exports the hub's counters, read when Prometheus scrapes.
type hubCollector struct{ m *Main }

func (c *hubCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descReceived, descStored, descFlagged, descRejected, descRefused, descQueue, descCommit, descSeq, descClients, descWS, descResyncs, descWSSlow, descDevices, descConnDev, descDBBytes, descFwdDrop, descFailures, descRollDrop, descCmds, descCmdRef, descCmdOpen, descReady} {
		ch <- d
	}
}

func (c *hubCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	if m.Store == nil {
		return // not running yet
	}
	s := m.Stats.Snapshot()
	ch <- prometheus.MustNewConstMetric(descReceived, prometheus.CounterValue, float64(s.Received))
	ch <- prometheus.MustNewConstMetric(descStored, prometheus.CounterValue, float64(s.Stored))
	ch <- prometheus.MustNewConstMetric(descFlagged, prometheus.CounterValue, float64(s.Flagged))
	for _, r := range devices.Reasons {
		ch <- prometheus.MustNewConstMetric(descRejected, prometheus.CounterValue, float64(s.Rejected[r]), string(r))
	}
	for _, r := range devices.Refusals {
		ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(s.Refused[r]), string(r))
	}
	ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(m.Store.QueueLen()))
	ch <- prometheus.MustNewConstMetric(descCommit, prometheus.GaugeValue, m.Store.LastCommit().Seconds())
	ch <- prometheus.MustNewConstMetric(descSeq, prometheus.GaugeValue, float64(m.Store.LastSeq()))
	if m.Broker != nil {
		ch <- prometheus.MustNewConstMetric(descClients, prometheus.GaugeValue, float64(m.Broker.Clients()))
	}
	if m.Broker != nil {
		ch <- prometheus.MustNewConstMetric(descConnDev, prometheus.GaugeValue, float64(m.Broker.ConnectedDevices()))
		ch <- prometheus.MustNewConstMetric(descFwdDrop, prometheus.CounterValue, float64(m.Broker.ForwardDropped()))
	}
	if m.HTTP != nil {
		ch <- prometheus.MustNewConstMetric(descWS, prometheus.GaugeValue, float64(m.HTTP.WSClients()))
		resyncs, slow := m.HTTP.WSDrops()
		ch <- prometheus.MustNewConstMetric(descResyncs, prometheus.CounterValue, float64(resyncs))
		ch <- prometheus.MustNewConstMetric(descWSSlow, prometheus.CounterValue, float64(slow))
	}
	ch <- prometheus.MustNewConstMetric(descDevices, prometheus.GaugeValue, float64(len(m.Store.Activity())))
	if m.SQLite != nil {
		var size int64
		for _, suffix := range []string{"", "-wal"} {
			if fi, err := os.Stat(m.Config.DB + suffix); err == nil {
				size += fi.Size()
			}
		}
		ch <- prometheus.MustNewConstMetric(descDBBytes, prometheus.GaugeValue, float64(size))
	}
	ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(m.Store.CommitFailures()))
	if m.SQLite != nil {
		ch <- prometheus.MustNewConstMetric(descRollDrop, prometheus.CounterValue, float64(m.SQLite.RollupBucketsDropped()))
	}
	if m.Downlink != nil {
		for i, n := range m.Downlink.Counts() {
			ch <- prometheus.MustNewConstMetric(descCmds, prometheus.CounterValue, float64(n), string(devices.CommandStatuses[i]))
		}
		ch <- prometheus.MustNewConstMetric(descCmdRef, prometheus.CounterValue, float64(m.Downlink.Refused()))
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		open, err := m.Store.OpenCommands(ctx)
		cancel()
		if err == nil {
			for _, st := range []devices.CommandStatus{devices.CommandQueued, devices.CommandSent, devices.CommandDelivered} {
				ch <- prometheus.MustNewConstMetric(descCmdOpen, prometheus.GaugeValue, float64(open[st]), string(st))
			}
		}
	}
	ready := 1.0
	if m.Ready() != nil {
		ready = 0
	}
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, ready)
}
