package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/telehub/telehub/dashboard"
	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/devices/alerts"
	"github.com/telehub/telehub/devices/broker"
	"github.com/telehub/telehub/devices/ingest"
	"github.com/telehub/telehub/store"
)

// Config is the hub's configuration. Every field has a flag and a TELEHUB_*
// environment variable named after it; a flag wins over the variable.
type Config struct {
	DB              string
	HTTPAddr        string
	MQTTAddr        string
	MQTTURL         string
	MQTTClientID    string
	MQTTUsername    string
	MQTTPassword    string
	MQTTShareGroup  string
	TopicTelemetry  string
	TopicStatus     string
	MaxPayload      int
	MaxMetrics      int
	MaxMetricName   int
	BatchMax        int
	CommitLinger    time.Duration
	QueueSize       int
	WSQueue         int
	WSWriteTimeout  time.Duration
	AllowedOrigins  string
	AllowedHosts    string
	TrustedProxies  string
	ShutdownTimeout time.Duration
	LogLevel        string
	LogFormat       string
	Demo            int

	// Security (docs/security.md).
	DeviceAuth           bool
	AllowAnonymous       bool
	APIToken             string
	MQTTSAddr            string
	MQTTTLSCert          string
	MQTTTLSKey           string
	MQTTTLSClientCA      string
	HTTPTLSCert          string
	HTTPTLSKey           string
	MaxConnections       int
	MQTTClientQueue      int
	MQTTWriteTimeout     time.Duration
	MQTTMaxKeepAlive     time.Duration
	MQTTMaxSessionExpiry time.Duration
	MQTTMaxSessions      int
	DeviceRate           float64
	DeviceBurst          int
	WSMaxClients         int

	DeviceTimeout time.Duration

	// Retention.
	Retention string
	MaxDBSize string
	// MaxPendingCommands caps one device's unfinished commands.
	MaxPendingCommands int

	// Alerts (docs/alerts.md).
	Rules              string
	AlertWebhooks      []string
	AlertWebhookSecret string
	AlertRetention     string
}

// envName returns the environment variable of a flag: --mqtt-url is TELEHUB_MQTT_URL.
func envName(flagName string) string {
	return "TELEHUB_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ParseFlags reads args (without the program name) and the environment.
func ParseFlags(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("telehub", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var errs []error
	str := func(p *string, name, def, usage string) {
		if v := getenv(envName(name)); v != "" {
			def = v
		}
		fs.StringVar(p, name, def, usage+" (env "+envName(name)+")")
	}
	num := func(p *int, name string, def int, usage string) {
		if v := getenv(envName(name)); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: not an integer", envName(name), v))
			}
			def = n
		}
		fs.IntVar(p, name, def, usage+" (env "+envName(name)+")")
	}
	boolean := func(p *bool, name string, usage string) {
		def := false
		if v := getenv(envName(name)); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: want true or false", envName(name), v))
			}
			def = b
		}
		fs.BoolVar(p, name, def, usage+" (env "+envName(name)+")")
	}
	float := func(p *float64, name string, def float64, usage string) {
		if v := getenv(envName(name)); v != "" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: not a number", envName(name), v))
			}
			def = f
		}
		fs.Float64Var(p, name, def, usage+" (env "+envName(name)+")")
	}
	list := func(p *[]string, name, usage string) {
		if v := getenv(envName(name)); v != "" {
			*p = splitList(v)
		}
		fromEnv := *p != nil
		fs.Func(name, usage+" (env "+envName(name)+")", func(v string) error {
			if fromEnv { // a flag replaces the variable's list
				*p, fromEnv = nil, false
			}
			*p = append(*p, v)
			return nil
		})
	}
	dur := func(p *time.Duration, name string, def time.Duration, usage string) {
		if v := getenv(envName(name)); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: not a duration", envName(name), v))
			}
			def = d
		}
		fs.DurationVar(p, name, def, usage+" (env "+envName(name)+")")
	}

	str(&c.DB, "db", "telehub.db", "SQLite database file, created if missing; or a PostgreSQL URL, postgres://user:password@host:5432/db?sslmode=...")
	str(&c.HTTPAddr, "http", dashboard.DefaultAddr, "HTTP listen address for the dashboard, REST API and WebSocket")
	str(&c.MQTTAddr, "mqtt", broker.DefaultAddr, "embedded MQTT broker listen address (ignored with --mqtt-url)")
	str(&c.MQTTURL, "mqtt-url", "", "external broker URL, e.g. tcp://127.0.0.1:1883; empty runs the embedded broker")
	str(&c.MQTTClientID, "mqtt-client-id", ingest.DefaultClientID, "client id of the hub's persistent session on the external broker")
	str(&c.MQTTUsername, "mqtt-username", "", "username on the external broker")
	str(&c.MQTTPassword, "mqtt-password", "", "password on the external broker")
	str(&c.MQTTShareGroup, "mqtt-share-group", "", "subscribe through $share/GROUP/... so several hubs split the stream")
	str(&c.TopicTelemetry, "topic-telemetry", devices.DefaultTelemetryPattern, "telemetry topic pattern; {device} marks the device id level")
	str(&c.TopicStatus, "topic-status", devices.DefaultStatusPattern, "status topic pattern; {device} marks the device id level; empty for none")
	num(&c.MaxPayload, "max-payload", broker.DefaultMaxPayload, "largest payload stored, bytes; larger publishes are refused and counted")
	num(&c.MaxMetrics, "max-metrics", store.DefaultMaxMetrics, "most metric names one device may have; a message that would add more is refused and counted")
	num(&c.MaxMetricName, "max-metric-name", store.DefaultMaxMetricName, "longest metric name accepted, bytes; a message with a longer one is refused and counted")
	num(&c.BatchMax, "batch-max", store.DefaultMaxBatch, "most messages committed in one transaction")
	dur(&c.CommitLinger, "commit-linger", store.DefaultLinger, "with fewer than 64 messages queued, wait this long for more before a commit (fewer, larger commits); 0 commits at once")
	num(&c.QueueSize, "queue-size", store.DefaultQueueSize, "ingest queue capacity, messages; when full QoS 1 waits and QoS 0 is dropped and counted")
	num(&c.WSQueue, "ws-queue", dashboard.DefaultWSQueue, "committed batches buffered per WebSocket client before it is resynchronised")
	dur(&c.WSWriteTimeout, "ws-write-timeout", dashboard.DefaultWSWriteTimeout, "a WebSocket client that does not read for this long is disconnected")
	str(&c.AllowedOrigins, "allowed-origins", "", "comma-separated extra browser origins allowed to open the WebSocket and change things")
	str(&c.AllowedHosts, "allowed-hosts", "", "comma-separated host names the web side answers to besides IP addresses, localhost and this machine's name (*.example.com for a domain)")
	str(&c.TrustedProxies, "trusted-proxies", "", "comma-separated proxy IPs or CIDR ranges whose X-Forwarded-Host and X-Forwarded-For are believed")
	dur(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "how long a graceful shutdown may take")
	num(&c.Demo, "demo", 0, "run this many simulated devices inside the hub (thermostats, trackers and meters, one message a second each)")
	boolean(&c.DeviceAuth, "device-auth", "require every MQTT client to authenticate as a device (telehub device add NAME); each may use only its own topics")
	boolean(&c.AllowAnonymous, "allow-anonymous", "allow listening on a non-loopback address without authentication (not recommended)")
	str(&c.APIToken, "api-token", "", "admin token for the REST API and WebSocket; with this or any token from 'telehub token add', every request needs one")
	str(&c.MQTTSAddr, "mqtts", "127.0.0.1:8883", "MQTT over TLS listen address, used with --mqtt-tls-cert")
	str(&c.MQTTTLSCert, "mqtt-tls-cert", "", "PEM certificate (chain) for MQTT over TLS; enables --mqtts")
	str(&c.MQTTTLSKey, "mqtt-tls-key", "", "PEM private key for --mqtt-tls-cert")
	str(&c.MQTTTLSClientCA, "mqtt-tls-client-ca", "", "PEM CA bundle: devices may authenticate on --mqtts with a client certificate whose common name is their id")
	str(&c.HTTPTLSCert, "http-tls-cert", "", "PEM certificate (chain): serve HTTPS instead of HTTP on --http")
	str(&c.HTTPTLSKey, "http-tls-key", "", "PEM private key for --http-tls-cert")
	num(&c.MaxConnections, "max-connections", 10000, "most MQTT clients connected at once; 0 for no limit")
	num(&c.MQTTClientQueue, "mqtt-client-queue", broker.DefaultClientWritesPending, "packets queued per MQTT client (8 bytes each, allocated at connect); a subscriber further behind misses forwards (counted)")
	dur(&c.MQTTWriteTimeout, "mqtt-write-timeout", broker.DefaultWriteTimeout, "an MQTT client that does not read what the broker writes for this long is disconnected")
	dur(&c.MQTTMaxKeepAlive, "mqtt-max-keepalive", broker.DefaultMaxKeepAlive, "longest MQTT keep alive granted; clients asking for none (0) or more get this (MQTT 5: Server Keep Alive)")
	dur(&c.MQTTMaxSessionExpiry, "mqtt-max-session-expiry", broker.DefaultMaxSessionExpiry, "longest a session outlives its connection (MQTT 5 session expiry; MQTT 3.1.1 clean session off)")
	num(&c.MQTTMaxSessions, "mqtt-max-sessions", broker.DefaultMaxSessions, "most sessions kept for clients that went away; past it the oldest are dropped")
	float(&c.DeviceRate, "device-rate", 0, "most publishes per second per device, on average (token bucket); 0 for no limit")
	num(&c.DeviceBurst, "device-burst", 0, "publishes a device may send at once above --device-rate; default: one second's worth")
	num(&c.WSMaxClients, "ws-max-clients", dashboard.DefaultWSMaxClients, "most WebSocket clients at once; more get 503")
	dur(&c.DeviceTimeout, "device-timeout", 0, "a device silent for this long turns offline (and online again when it publishes); 0 disables")
	str(&c.Retention, "retention", "0", "delete messages older than this (by their ts), e.g. 30d, 2w, 36h; 0 keeps everything; devices may override it through the API")
	num(&c.MaxPendingCommands, "max-pending-commands", devices.DefaultMaxPendingCommands, "most commands one device may have waiting (not yet answered or expired); more are refused with 429")
	str(&c.Rules, "rules", "", "alert rules file (YAML or JSON), loaded at start and on SIGHUP; its rules are read-only through the API")
	list(&c.AlertWebhooks, "alert-webhook", "URL that receives every alert change as a signed POST; repeat the flag for several (env: comma-separated)")
	str(&c.AlertWebhookSecret, "alert-webhook-secret", "", "HMAC-SHA256 key that signs webhook requests; empty: one is generated and kept in the database (GET /api/v1/alerts/webhook-secret)")
	str(&c.AlertRetention, "alert-retention", "90d", "delete cleared alerts, with their history and webhook deliveries, this long after they cleared (30d, 2w, 36h); 0 keeps them all")
	str(&c.MaxDBSize, "max-db-size", "0", "delete the oldest messages when the database uses more than this, e.g. 10GB, 500MB; 0 for no limit")
	str(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	str(&c.LogFormat, "log-format", "text", "log format: text or json")

	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: telehub [flags]\n       telehub backup [--db FILE] BACKUP\n       telehub config check [flags]\n       telehub device add|rotate|revoke NAME | device list\n       telehub token add NAME [--scope read|admin] | token revoke NAME | token list\n       telehub migrate --from telehub.db --to postgres://...\n       telehub --version\n\nTelehub stores MQTT telemetry in SQLite (or PostgreSQL, --db postgres://...)\nand streams it to a live dashboard. With no flags it runs the embedded broker\non %s, stores in ./telehub.db and serves http://%s/.\n\nFlags:\n", broker.DefaultAddr, dashboard.DefaultAddr)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	if len(errs) > 0 {
		return c, errors.Join(errs...)
	}
	return c, c.Validate()
}

// Validate checks values that flag parsing cannot.
func (c Config) Validate() error {
	switch {
	case c.DB == "":
		return errors.New("--db is required")
	case isPostgres(c.DB) && c.MaxDBSize != "" && c.MaxDBSize != "0":
		return errors.New("--max-db-size applies to SQLite only; on PostgreSQL, use --retention")
	case c.MaxPayload <= 0:
		return errors.New("--max-payload must be positive")
	case c.MaxMetrics <= 0 || c.MaxMetricName <= 0:
		return errors.New("--max-metrics and --max-metric-name must be positive")
	case c.CommitLinger < 0 || c.CommitLinger > time.Second:
		return errors.New("--commit-linger must be between 0 and 1s")
	case c.MaxPendingCommands <= 0:
		return errors.New("--max-pending-commands must be positive")
	case c.BatchMax <= 0:
		return errors.New("--batch-max must be positive")
	case c.QueueSize <= 0:
		return errors.New("--queue-size must be positive")
	case c.WSQueue <= 0:
		return errors.New("--ws-queue must be positive")
	case c.Demo < 0 || c.Demo > 10000:
		return errors.New("--demo must be between 0 and 10000")
	case c.MQTTClientQueue < 16:
		return errors.New("--mqtt-client-queue must be at least 16")
	case c.MQTTWriteTimeout < 100*time.Millisecond:
		return errors.New("--mqtt-write-timeout must be at least 100ms")
	case c.MQTTMaxKeepAlive < time.Second || c.MQTTMaxKeepAlive > 65535*time.Second:
		return errors.New("--mqtt-max-keepalive must be between 1s and 65535s")
	case c.MQTTMaxSessionExpiry < time.Second || c.MQTTMaxSessions < 1:
		return errors.New("--mqtt-max-session-expiry must be at least 1s and --mqtt-max-sessions at least 1")
	case c.MaxConnections < 0 || c.DeviceRate < 0 || c.DeviceBurst < 0 || c.WSMaxClients < 0 || c.DeviceTimeout < 0:
		return errors.New("--max-connections, --device-rate, --device-burst, --ws-max-clients and --device-timeout must not be negative")
	case (c.MQTTTLSCert == "") != (c.MQTTTLSKey == ""):
		return errors.New("--mqtt-tls-cert and --mqtt-tls-key go together")
	case (c.HTTPTLSCert == "") != (c.HTTPTLSKey == ""):
		return errors.New("--http-tls-cert and --http-tls-key go together")
	case c.MQTTTLSClientCA != "" && c.MQTTTLSCert == "":
		return errors.New("--mqtt-tls-client-ca needs --mqtt-tls-cert")
	case c.APIToken != "" && len(c.APIToken) < 16:
		return errors.New("--api-token must be at least 16 characters (telehub token add makes strong ones)")
	}
	for _, u := range c.AlertWebhooks {
		if err := devices.ValidateWebhookURL(u); err != nil {
			return fmt.Errorf("--alert-webhook %q: want an http:// or https:// URL", u)
		}
	}
	if _, err := devices.ParseRetention(c.AlertRetention); err != nil {
		return fmt.Errorf("--alert-retention: %w", err)
	}
	if c.Rules != "" {
		if _, err := alerts.LoadRulesFile(c.Rules); err != nil {
			return fmt.Errorf("--rules: %w", err)
		}
	}
	// Safe by default: anonymous MQTT only on loopback.
	if c.MQTTURL == "" && !c.DeviceAuth && !c.AllowAnonymous {
		for _, addr := range c.mqttAddrs() {
			if !isLoopback(addr) {
				return fmt.Errorf("refusing to run an open MQTT broker on %s: pass --device-auth and provision devices with 'telehub device add NAME', or pass --allow-anonymous to accept anyone", addr)
			}
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return fmt.Errorf("--log-format %q: want text or json", c.LogFormat)
	}
	if _, err := devices.NewScheme(c.TopicTelemetry, c.TopicStatus); err != nil {
		return err
	}
	if _, err := devices.ParseRetention(c.Retention); err != nil {
		return fmt.Errorf("--retention: %w", err)
	}
	if _, err := parseSize(c.MaxDBSize); err != nil {
		return fmt.Errorf("--max-db-size: %w", err)
	}
	return nil
}

// mqttAddrs returns the embedded broker's listen addresses.
func (c Config) mqttAddrs() []string {
	addrs := []string{c.MQTTAddr}
	if c.MQTTTLSCert != "" {
		addrs = append(addrs, c.MQTTSAddr)
	}
	return addrs
}

// isLoopback reports whether a listen address accepts connections only from
// this machine: an IP in 127.0.0.0/8 or ::1, or "localhost". An empty host
// (all interfaces) or any other name is not loopback.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// parseSize reads a size in bytes with an optional unit: 500MB, 10GB, 1TB
// (powers of 1024), or plain bytes.
func parseSize(s string) (int64, error) {
	s = strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"B", 1}} {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(num), u.n
			break
		}
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || !(n >= 0 && n*float64(mult) <= 1<<60) { // also refuses NaN and absurd sizes
		return 0, fmt.Errorf("want a size such as 500MB or 10GB, got %q", s)
	}
	return int64(n * float64(mult)), nil
}
