package simulator

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/telehub/telehub/devices"
)

// Config describes a fleet. Build it with NewConfig, adjust, then Run.
type Config struct {
	// Broker is the MQTT broker URL: tcp://host:port or ssl://host:port.
	// Default tcp://127.0.0.1:1883.
	Broker string
	// CA, Cert, Key are PEM files for TLS (ssl://): a CA to trust, and a
	// client certificate and key. Insecure skips server verification.
	CA, Cert, Key string
	Insecure      bool
	// Devices is the fleet size. Default 10.
	Devices int
	// Rate is messages per second per device. Default 1.
	Rate float64
	// Duration stops the run after this long; 0 means until Count or the
	// context ends.
	Duration time.Duration
	// Count stops each device after this many messages; 0 means no limit.
	Count int
	// QoS is 0, 1 or 2. Default 1.
	QoS byte
	// Ramp is how many devices connect per second. Default 100.
	Ramp float64
	// Jitter varies each interval by up to this fraction (0 to 1). Default 0.1.
	Jitter float64
	// Profile names the signal model (Profiles). Default thermostat.
	Profile string
	// Template is the payload template of the custom profile (see Template).
	Template string
	// IDPrefix prefixes the device ids: prefix-0001. Default "sim".
	IDPrefix string
	// Username and Password authenticate every device; TokenFile instead
	// names a file with one token per line, used as each device's username.
	Username, Password, TokenFile string
	// Tokens, when set, are the tokens themselves (device i uses Tokens[i]);
	// they take the place of TokenFile.
	Tokens []string
	// Seed makes a fleet's values reproducible. Default 1.
	Seed int64
	// Clean starts each session clean; false keeps the session on the broker
	// and resends unacknowledged messages after a reconnect. Default true.
	Clean bool
	// Retain sets the retain flag on telemetry.
	Retain bool
	// InFlight is how many unacknowledged QoS 1/2 messages one device keeps;
	// beyond it the device waits, so a slow hub lowers the achieved rate
	// instead of growing memory. Default DefaultInFlight; 1 is a device
	// that waits for each acknowledgement.
	InFlight int
	// Verify checks what arrived through the hub's WebSocket and REST API at HubURL.
	Verify bool
	// HubURL is the hub's HTTP base URL. Default http://127.0.0.1:8080.
	HubURL string
	// HubToken is an API token for hubs that require one: read scope is
	// enough for Verify, CommandRate needs admin.
	HubToken string
	// Commands makes the devices listen to their commands and shared
	// attributes and answer them (ping, setInterval). Default true.
	Commands bool
	// CommandRate, when positive, sends that many ping commands a second
	// through the hub's API at HubURL, each to a random connected device,
	// and reports their round trips.
	CommandRate float64
	// Status receives a live one-line status every second; nil for none.
	Status io.Writer
	// Scheme is the topic scheme. Default devices.DefaultScheme().
	Scheme *devices.Scheme
}

// NewConfig returns a Config with every default set.
func NewConfig() *Config {
	return &Config{
		Broker: "tcp://127.0.0.1:1883", Devices: 10, Rate: 1, QoS: 1, Ramp: 100, Jitter: 0.1, InFlight: DefaultInFlight,
		Profile: "thermostat", IDPrefix: "sim", Seed: 1, Clean: true, HubURL: "http://127.0.0.1:8080", Commands: true,
	}
}

// Validate reports the first invalid field.
// DefaultInFlight is Config.InFlight's default.
const DefaultInFlight = 100

func (c *Config) Validate() error {
	if c.InFlight == 0 {
		c.InFlight = DefaultInFlight
	}
	u, err := url.Parse(c.Broker)
	switch {
	case err != nil || u.Host == "":
		return fmt.Errorf("--broker %q: want tcp://host:port or ssl://host:port", c.Broker)
	case u.Scheme != "tcp" && u.Scheme != "ssl" && u.Scheme != "tls" && u.Scheme != "mqtt" && u.Scheme != "mqtts":
		return fmt.Errorf("--broker %q: unknown scheme %q", c.Broker, u.Scheme)
	case c.InFlight < 0:
		return errors.New("--inflight must not be negative")
	case c.CommandRate < 0 || c.CommandRate > 100000:
		return errors.New("--command-rate must be between 0 and 100000")
	case c.CommandRate > 0 && !c.Commands:
		return errors.New("--command-rate needs devices that answer: drop --commands=false")
	case c.Devices <= 0:
		return errors.New("--devices must be positive")
	case c.Rate <= 0:
		return errors.New("--rate must be positive")
	case c.QoS > 2:
		return errors.New("--qos must be 0, 1 or 2")
	case c.Ramp <= 0:
		return errors.New("--ramp must be positive")
	case c.Jitter < 0 || c.Jitter > 1:
		return errors.New("--jitter must be between 0 and 1")
	case c.Count < 0 || c.Duration < 0:
		return errors.New("--count and --duration must not be negative")
	case c.Verify && c.QoS == 0:
		return errors.New("--verify needs --qos 1 or 2: QoS 0 is best effort")
	case c.Verify && c.Profile == "custom" && !strings.Contains(c.Template, `"seq":{{seq}}`):
		return errors.New(`--verify with a custom template needs "seq":{{seq}} in it`)
	}
	if (c.Cert == "") != (c.Key == "") {
		return errors.New("--cert and --key go together")
	}
	if !slices.Contains(Profiles, c.Profile) {
		return fmt.Errorf("--profile %q: want one of %s", c.Profile, strings.Join(Profiles, ", "))
	}
	if c.Profile == "custom" {
		if _, err := ParseTemplate(c.Template); err != nil {
			return err
		}
	}
	for i := 0; i < c.Devices; i++ {
		if err := devices.ValidateDeviceID(c.deviceID(i)); err != nil {
			return fmt.Errorf("--id-prefix: %w", err)
		}
	}
	return nil
}

func (c *Config) deviceID(i int) string { return DeviceID(c.IDPrefix, i) }

// DeviceID returns the id of device i (from 0) of a fleet: prefix-0001, ...
func DeviceID(prefix string, i int) string { return fmt.Sprintf("%s-%04d", prefix, i+1) }

// tlsConfig builds the TLS configuration from CA, Cert, Key and Insecure.
func (c *Config) tlsConfig() (*tls.Config, error) {
	tc := &tls.Config{InsecureSkipVerify: c.Insecure, MinVersion: tls.VersionTLS12}
	if c.CA != "" {
		pem, err := os.ReadFile(c.CA)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca %s: no PEM certificate", c.CA)
		}
	}
	if c.Cert != "" {
		cert, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, fmt.Errorf("--cert/--key: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// tokens reads TokenFile: one token per line, blank lines and # comments
// skipped. Device i uses token i (modulo the count).
func (c *Config) tokens() ([]string, error) {
	if len(c.Tokens) > 0 {
		return c.Tokens, nil
	}
	if c.TokenFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("--token-file: %w", err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--token-file %s: no tokens", c.TokenFile)
	}
	if len(out) < c.Devices {
		// Reusing tokens would connect several simulated devices as one,
		// each taking over the others' sessions.
		return nil, fmt.Errorf("--token-file %s has %d tokens for %d devices: one token per device", c.TokenFile, len(out), c.Devices)
	}
	return out, nil
}
