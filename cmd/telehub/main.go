// Command telehub is the Telehub hub: an MQTT broker (embedded, or a
// subscription to an external one), a SQLite store with durable
// acknowledgements, and the web dashboard, REST API and WebSocket feed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/telehub/telehub/dashboard"
	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/devices/alerts"
	"github.com/telehub/telehub/devices/broker"
	"github.com/telehub/telehub/devices/ingest"
	"github.com/telehub/telehub/simulator"
	"github.com/telehub/telehub/store/sqlite"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	if code := runCommand(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); code >= 0 {
		os.Exit(code)
	}
	cfg, err := ParseFlags(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	} else if err != nil {
		fmt.Fprintln(os.Stderr, "telehub:", err)
		os.Exit(2)
	}
	m := NewMain(cfg, os.Stderr)
	setPahoLogger(m.Logger.With("component", "paho"))
	if err := m.Run(); err != nil {
		m.Close(context.Background())
		fmt.Fprintln(os.Stderr, "telehub:", err)
		os.Exit(1)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	for waiting := true; waiting; {
		select {
		case <-hup: // reload the rules file; an error keeps the rules as they were
			if err := m.ReloadRules(ctx); err != nil {
				m.Logger.Error("rules not reloaded", "error", err)
			}
		case <-ctx.Done():
			waiting = false
		}
	}
	signal.Stop(hup)
	stop() // a second signal now kills the process without a graceful shutdown
	m.Logger.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	cctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := m.Close(cctx); err != nil {
		fmt.Fprintln(os.Stderr, "telehub: shutdown:", err)
		os.Exit(1)
	}
	m.Logger.Info("stopped")
}

// Main is the running hub: every component, wired together. Tests run it
// in-process with a temporary database and ":0" ports.
type Main struct {
	Config Config
	Logger *slog.Logger

	Stats *devices.Stats
	Feed  *devices.Feed
	// Store is the storage backend --db selects; SQLite is the same one
	// when it is the embedded SQLite file (nil on PostgreSQL).
	Store      devices.Store
	SQLite     *sqlite.Store
	Broker     *broker.Broker     // nil with an external broker
	Subscriber *ingest.Subscriber // nil with the embedded broker
	HTTP       *dashboard.Server
	Registry   *prometheus.Registry

	commitSeconds, commitRows prometheus.Histogram
	commandSeconds            prometheus.Histogram // command round trips

	Presence     *devices.Presence
	presenceStop context.CancelFunc
	presenceDone chan struct{}

	// Downlink sends commands to devices (through the embedded broker).
	Downlink     *devices.Downlink
	downlinkStop context.CancelFunc
	downlinkDone chan struct{}

	// Alerts evaluates the alert rules; Notifier delivers their webhooks.
	Alerts             *alerts.Engine
	Notifier           *alerts.Notifier
	alertsStop         context.CancelFunc
	alertsDone         chan struct{}
	webhookSeconds     *prometheus.HistogramVec
	webhookSecretValue string

	demoStop context.CancelFunc
	demoDone chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// NewMain returns a Main for cfg that logs to logOut.
func NewMain(cfg Config, logOut io.Writer) *Main {
	return &Main{Config: cfg, Logger: newLogger(cfg, logOut), Stats: new(devices.Stats), Feed: new(devices.Feed)}
}

func newLogger(cfg Config, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// Run opens the database, the writer, the MQTT side and the HTTP server, in
// that order. On error the caller still calls Close.
func (m *Main) Run() error {
	cfg := m.Config
	scheme, err := devices.NewScheme(cfg.TopicTelemetry, cfg.TopicStatus)
	if err != nil {
		return err
	}
	m.Registry = m.newRegistry()
	if err := m.openStore(); err != nil {
		return err
	}
	m.Logger.Info("database open", "db", redactDSN(cfg.DB), "last_seq", m.Store.LastSeq())
	m.Downlink = &devices.Downlink{Store: m.Store, Twins: m.Store, MaxPending: cfg.MaxPendingCommands, Logger: m.Logger.With("component", "downlink"),
		OnChange:     func(c devices.Command) { m.Feed.Publish([]devices.Message{c.FeedMessage()}) },
		OnAttributes: func(e devices.AttributeEvent) { m.Feed.Publish([]devices.Message{e.FeedMessage()}) },
		OnRoundTrip:  func(d time.Duration) { m.commandSeconds.Observe(d.Seconds()) }}
	if err := m.openAlerts(); err != nil {
		return err
	}
	m.followDownlink()
	if err := m.checkHTTPExposure(); err != nil {
		return err
	}

	m.Presence = &devices.Presence{Recorder: m.Store, Devices: m.Store.Activity, Lookup: m.Store.ActivityOf,
		Timeout: cfg.DeviceTimeout, Logger: m.Logger.With("component", "presence")}
	if cfg.MQTTURL == "" {
		m.Broker = broker.New(m.Store)
		m.Broker.Presence = m.Presence
		m.Presence.Connected = m.Broker.DeviceConnected
		// Connections the hub saw before it stopped are gone: those devices
		// are offline until they connect again.
		stale, err := m.Store.StaleOnline(context.Background())
		if err != nil {
			return err
		}
		m.Presence.Restarted(stale)
		m.Broker.Addr = cfg.MQTTAddr
		m.Broker.Scheme = scheme
		m.Broker.MaxPayload = cfg.MaxPayload
		m.Broker.Stats = m.Stats
		m.Broker.Auth = m.Store
		m.Broker.RequireAuth = cfg.DeviceAuth
		m.Broker.MaxConnections = cfg.MaxConnections
		m.Broker.ClientWritesPending = cfg.MQTTClientQueue
		m.Broker.WriteTimeout = cfg.MQTTWriteTimeout
		m.Broker.MaxKeepAlive = cfg.MQTTMaxKeepAlive
		m.Broker.MaxSessionExpiry = cfg.MQTTMaxSessionExpiry
		m.Broker.MaxSessions = cfg.MQTTMaxSessions
		m.Broker.DeviceRate, m.Broker.DeviceBurst = cfg.DeviceRate, cfg.DeviceBurst
		if cfg.MQTTTLSCert != "" {
			if m.Broker.TLSConfig, err = mqttTLSConfig(cfg); err != nil {
				return err
			}
			m.Broker.TLSAddr = cfg.MQTTSAddr
		}
		m.Broker.Logger = m.Logger.With("component", "broker")
		m.Broker.Commands = m.Downlink
		if err := m.Broker.Open(); err != nil {
			return err
		}
		m.Downlink.Sender = m.Broker
		m.Logger.Info("mqtt broker listening", "addr", m.Broker.ListenAddr(), "tls_addr", m.Broker.TLSListenAddr(), "device_auth", cfg.DeviceAuth)
	} else {
		m.Subscriber = ingest.New(cfg.MQTTURL, m.Store)
		m.Subscriber.ClientID = cfg.MQTTClientID
		m.Subscriber.Username = cfg.MQTTUsername
		m.Subscriber.Password = cfg.MQTTPassword
		m.Subscriber.ShareGroup = cfg.MQTTShareGroup
		m.Subscriber.Scheme = scheme
		m.Subscriber.MaxPayload = cfg.MaxPayload
		m.Subscriber.Stats = m.Stats
		m.Subscriber.Logger = m.Logger.With("component", "ingest")
		m.Subscriber.Commands = m.Downlink
		if err := m.Subscriber.Open(); err != nil {
			return err
		}
		m.Downlink.Sender = m.Subscriber
	}

	var pctx context.Context
	pctx, m.presenceStop = context.WithCancel(context.Background())
	m.presenceDone = make(chan struct{})
	go func() { defer close(m.presenceDone); m.Presence.Run(pctx) }()
	var dctx context.Context
	dctx, m.downlinkStop = context.WithCancel(context.Background())
	m.downlinkDone = make(chan struct{})
	go func() { defer close(m.downlinkDone); m.Downlink.Run(dctx) }()
	m.startAlerts()

	m.HTTP = dashboard.NewServer(m.Store, m.Feed)
	m.HTTP.Addr = cfg.HTTPAddr
	m.HTTP.Stats = m.Stats
	m.HTTP.Deleter = m.Store
	m.HTTP.Retention = m.Store
	m.HTTP.Events = m.Store
	m.HTTP.Commands = m.Downlink
	m.HTTP.Attributes = m.Downlink
	m.HTTP.Alerts = m.Alerts
	m.HTTP.Boards = m.Store
	m.HTTP.MetricSettings = m.Store
	m.HTTP.WebhookSecret = m.webhookSecretValue
	if b, ok := m.Store.(dashboard.Backuper); ok {
		m.HTTP.Backup = b
	}
	m.HTTP.Ready = m.Ready
	m.HTTP.Metrics = promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
	m.HTTP.WSQueue = cfg.WSQueue
	m.HTTP.WSWriteTimeout = cfg.WSWriteTimeout
	m.HTTP.WSMaxClients = cfg.WSMaxClients
	m.HTTP.Credentials = m.Store
	m.HTTP.APIToken = cfg.APIToken
	m.HTTP.Version = devices.BuildVersion()
	if m.Broker != nil {
		m.HTTP.DisconnectDevice = m.Broker.DisconnectDevice
		m.HTTP.MQTTAddr = m.Broker.ListenAddr()
	} else if u, err := url.Parse(cfg.MQTTURL); err == nil {
		m.HTTP.MQTTAddr = u.Redacted()
	}
	if cfg.HTTPTLSCert != "" {
		if m.HTTP.TLSConfig, err = httpTLSConfig(cfg); err != nil {
			return err
		}
	}
	m.HTTP.AllowedHosts = splitList(cfg.AllowedHosts)
	m.HTTP.TrustedProxies = splitList(cfg.TrustedProxies)
	if cfg.AllowedOrigins != "" {
		m.HTTP.AllowedOrigins = strings.Split(cfg.AllowedOrigins, ",")
	}
	m.HTTP.Logger = m.Logger.With("component", "dashboard")
	if err := m.HTTP.Open(); err != nil {
		return err
	}
	m.Logger.Info("http listening", "url", m.HTTP.URL())
	if cfg.Demo > 0 {
		m.startDemo(scheme)
	}
	return nil
}

// startDemo runs cfg.Demo simulated devices against the hub's own broker
// (or the external one), split between the thermostat, tracker and meter
// profiles, until Close.
func (m *Main) startDemo(scheme *devices.Scheme) {
	broker := m.Config.MQTTURL
	if broker == "" {
		broker = m.Broker.URL()
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.demoStop, m.demoDone = cancel, make(chan struct{})
	var wg sync.WaitGroup
	for i, profile := range []string{"thermostat", "tracker", "meter"} {
		n := m.Config.Demo/3 + btoi(i < m.Config.Demo%3)
		if n == 0 {
			continue
		}
		cfg := simulator.NewConfig()
		cfg.Broker, cfg.Devices, cfg.Profile, cfg.IDPrefix, cfg.Scheme, cfg.Seed = broker, n, profile, "demo-"+profile, scheme, int64(i+1)
		if m.Config.DeviceAuth {
			tokens, err := m.demoTokens(cfg.IDPrefix, n)
			if err != nil {
				m.Logger.Error("demo devices not started: cannot provision their credentials", "error", err)
				continue
			}
			cfg.Tokens = tokens
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := simulator.Run(ctx, cfg); err != nil {
				m.Logger.Error("demo devices stopped", "profile", profile, "error", err)
			}
		}()
	}
	go func() { wg.Wait(); close(m.demoDone) }()
	m.Logger.Info("demo devices publishing", "devices", m.Config.Demo)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Ready reports whether the hub can take and store messages: the store's
// latest commit succeeded and, with an external broker, the hub is
// connected and subscribed.
func (m *Main) Ready() error {
	if ok, msg := m.Store.Healthy(); !ok {
		return fmt.Errorf("store failing: %s", msg)
	}
	if m.Subscriber != nil && !m.Subscriber.Connected() {
		return errors.New("not connected to the external broker")
	}
	return nil
}

// Close shuts down gracefully: the MQTT side stops taking messages, the
// writer commits and acknowledges everything it accepted, the MQTT side
// disconnects, WebSockets get a close frame, and the database closes. It
// returns the errors joined and still closes the rest; it is safe after a
// failed Run and more than once.
func (m *Main) Close(ctx context.Context) error {
	m.closeOnce.Do(func() { m.closeErr = m.close(ctx) })
	return m.closeErr
}

func (m *Main) close(ctx context.Context) error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	// step runs one part of the shutdown; a slow one is logged, so that a
	// shutdown that takes long says what it waited for.
	step := func(name string, fn func()) {
		start := time.Now()
		fn()
		if took := time.Since(start); took > time.Second {
			m.Logger.Warn("slow shutdown step", "step", name, "took", took.Round(time.Millisecond))
		}
	}
	if m.demoStop != nil { // demo devices leave first, saying "offline"
		step("demo devices", func() {
			m.demoStop()
			select {
			case <-m.demoDone:
			case <-ctx.Done():
			}
		})
	}
	if m.presenceStop != nil { // status notes stop before the writer closes
		step("presence", func() { m.presenceStop(); <-m.presenceDone })
	}
	if m.Broker != nil {
		step("broker drain", m.Broker.Drain)
	}
	if m.Subscriber != nil {
		step("subscriber drain", m.Subscriber.Drain)
	}
	// The evaluator saves its position while the store still writes; what
	// it did not evaluate yet, it reads from the store at the next start.
	step("alerts", m.stopAlerts)
	if m.Store != nil {
		step("store drain", func() { add(m.Store.Drain(ctx)) })
	}
	if m.Broker != nil {
		step("broker", func() { add(m.Broker.Close(ctx)) })
	}
	if m.Subscriber != nil {
		step("subscriber", func() { add(m.Subscriber.Close(ctx)) })
	}
	if m.downlinkStop != nil { // after the broker: its hooks hand the downlink work
		step("downlink", func() { m.downlinkStop(); <-m.downlinkDone })
	}
	m.Feed.Close()
	if m.HTTP != nil {
		step("http", func() { add(m.HTTP.Close(ctx)) })
	}
	if m.Store != nil {
		step("store", func() { add(m.Store.Close()) })
	}
	return errors.Join(errs...)
}

// setPahoLogger routes paho's package-level loggers to slog. paho logs
// through globals, so main does this once per process, before any client
// exists, and never library code or Run (tests run several hubs at once).
// paho reports every dropped connection at ERROR, several lines each; the
// ingest Subscriber logs connection loss and recovery itself, so paho's
// ERROR and WARN lines go to DEBUG and only CRITICAL stays an error.
func setPahoLogger(l *slog.Logger) {
	paho.ERROR = pahoLogger{l, slog.LevelDebug}
	paho.WARN = pahoLogger{l, slog.LevelDebug}
	paho.CRITICAL = pahoLogger{l, slog.LevelError}
}

type pahoLogger struct {
	l     *slog.Logger
	level slog.Level
}

func (p pahoLogger) Println(v ...any) {
	p.l.Log(context.Background(), p.level, strings.TrimSpace(fmt.Sprintln(v...)))
}
func (p pahoLogger) Printf(format string, v ...any) {
	p.l.Log(context.Background(), p.level, strings.TrimSpace(fmt.Sprintf(format, v...)))
}

func (m *Main) newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	m.commitSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "telehub_commit_seconds",
		Help:    "Duration of each commit that stored messages (the time a PUBACK waits for the disk).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms to 4 s
	})
	m.commitRows = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "telehub_commit_rows",
		Help:    "Messages per commit (group commit batch size).",
		Buckets: prometheus.ExponentialBuckets(1, 2, 14), // 1 to 8192
	})
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.commandSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "telehub_command_round_trip_seconds",
		Help:    "From a command's creation to the device's answer.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16), // 1 ms to 33 s
	})
	reg.MustRegister(&hubCollector{m: m}, alertCollector{m: m}, m.commitSeconds, m.commitRows, m.commandSeconds)
	m.alertMetrics(reg)
	return reg
}

func (m *Main) observeCommit(rows int, d time.Duration) {
	m.commitRows.Observe(float64(rows))
	m.commitSeconds.Observe(d.Seconds())
}

// splitList reads a comma-separated flag value; empty items are dropped.
func splitList(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
