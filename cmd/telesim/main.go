// Command telesim simulates fleets of MQTT devices against a Telehub hub (or
// any broker) and measures what arrived.
//
//	telesim [flags]                      run a fleet
//	telesim replay --file data.csv ...   replay recorded readings
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/simulator"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	os.Exit(code)
}

// run is main without the process: it returns the exit code (0 success,
// 1 failure or a verification that found loss, 2 bad usage).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-version" || args[0] == "version") {
		fmt.Fprintln(stdout, "telesim", devices.BuildVersion())
		return 0
	}
	if len(args) > 0 && args[0] == "replay" {
		return runReplay(ctx, args[1:], stdout, stderr)
	}
	cfg := simulator.NewConfig()
	fs := flag.NewFlagSet("telesim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jsonOut, qos := addFleetFlags(fs, cfg)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: telesim [flags]
       telesim replay --file data.csv [--speed N] [flags]

telesim simulates devices publishing telemetry over MQTT (topic
devices/{id}/telemetry, retained status on devices/{id}/status with a last
will) until --duration, --count or Ctrl-C, and prints what it measured.
With --verify it also watches the hub's WebSocket and reads back what the
hub stored, and reports lost, duplicated and reordered messages and the
publish-to-browser latency. It exits 1 when --verify finds a lost message
or a command sent with --command-rate got no answer.
The devices answer commands (ping; setInterval {"seconds":N} changes their
rate; anything else gets an error answer) and apply the shared attribute
"interval"; --command-rate sends pings through the hub's API and reports
their round trips.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "telesim: unexpected argument %q (see --help)\n", fs.Arg(0))
		return 2
	}
	if *qos > 2 {
		fmt.Fprintln(stderr, "telesim: --qos must be 0, 1 or 2")
		return 2
	}
	cfg.QoS = byte(*qos)
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "telesim:", err)
		return 2
	}
	if !*jsonOut {
		cfg.Status = stderr
	}
	r, err := simulator.Run(ctx, cfg)
	if r != nil {
		if *jsonOut {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			enc.Encode(r)
		} else {
			printReport(stdout, cfg, r)
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "telesim:", err)
		return 1
	}
	if cfg.Verify && (r.Lost > 0 || r.Duplicated > 0) {
		return 1
	}
	if r.Commands != nil && r.Commands.Lost > 0 {
		return 1 // a command that never got its answer
	}
	return 0
}

func addFleetFlags(fs *flag.FlagSet, cfg *simulator.Config) (jsonOut *bool, qos *uint) {
	fs.StringVar(&cfg.Broker, "broker", cfg.Broker, "MQTT broker URL: tcp://host:port, or ssl://host:port for TLS")
	fs.StringVar(&cfg.CA, "ca", "", "PEM file of a CA to trust for TLS")
	fs.StringVar(&cfg.Cert, "cert", "", "PEM client certificate for TLS (with --key)")
	fs.StringVar(&cfg.Key, "key", "", "PEM client key for TLS (with --cert)")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "skip TLS server certificate verification")
	fs.IntVar(&cfg.Devices, "devices", cfg.Devices, "number of devices")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "messages per second per device")
	fs.DurationVar(&cfg.Duration, "duration", 0, "stop after this long (0: until --count or Ctrl-C)")
	fs.IntVar(&cfg.Count, "count", 0, "messages per device, then stop (0: no limit)")
	qos = fs.Uint("qos", uint(cfg.QoS), "MQTT QoS: 0, 1 or 2")
	fs.Float64Var(&cfg.Ramp, "ramp", cfg.Ramp, "devices connecting per second")
	fs.Float64Var(&cfg.Jitter, "jitter", cfg.Jitter, "vary each interval by up to this fraction (0 to 1)")
	fs.StringVar(&cfg.Profile, "profile", cfg.Profile, "signal model: "+strings.Join(simulator.Profiles, ", "))
	fs.StringVar(&cfg.Template, "template", "", `payload template of the custom profile, e.g. '{"t":{{rand 18 25}},"seq":{{seq}},"ts":{{ts}}}'; placeholders {{device}} {{seq}} {{ts}} {{rand}} {{rand A B}} {{randint A B}}`)
	fs.StringVar(&cfg.IDPrefix, "id-prefix", cfg.IDPrefix, "device ids are PREFIX-0001, PREFIX-0002, ...")
	fs.StringVar(&cfg.Username, "username", "", "MQTT username for every device")
	fs.StringVar(&cfg.Password, "password", "", "MQTT password for every device")
	fs.StringVar(&cfg.TokenFile, "token-file", "", "file with one token per line, used as each device's MQTT username")
	fs.Int64Var(&cfg.Seed, "seed", cfg.Seed, "random seed: the same seed gives the same values")
	fs.BoolVar(&cfg.Clean, "clean", cfg.Clean, "clean sessions; --clean=false keeps the session and resends unacknowledged messages after a reconnect")
	fs.BoolVar(&cfg.Retain, "retain", false, "publish telemetry retained")
	fs.IntVar(&cfg.InFlight, "inflight", cfg.InFlight, "unacknowledged QoS 1/2 messages each device keeps at most (1: wait for each PUBACK)")
	fs.BoolVar(&cfg.Verify, "verify", false, "check what the hub stored and pushed live (needs --hub)")
	fs.StringVar(&cfg.HubURL, "hub", cfg.HubURL, "the hub's HTTP URL, for --verify")
	fs.StringVar(&cfg.HubToken, "hub-token", os.Getenv("TELEHUB_API_TOKEN"), "API token for --verify and --command-rate when the hub requires one (read scope is enough to verify, commands need admin; env TELEHUB_API_TOKEN)")
	fs.BoolVar(&cfg.Commands, "commands", cfg.Commands, "devices listen to their commands (answer ping and setInterval) and shared attributes (interval); --commands=false for telemetry only")
	fs.Float64Var(&cfg.CommandRate, "command-rate", 0, "send this many ping commands a second through the hub's API (--hub) to random devices and report their round trips")
	jsonOut = fs.Bool("json", false, "print the report as JSON")
	return jsonOut, qos
}

func printReport(w io.Writer, cfg *simulator.Config, r *simulator.Report) {
	fmt.Fprintf(w, "devices %d  connects %d  disconnects %d\n", r.Devices, r.Connects, r.Disconnects)
	fmt.Fprintf(w, "sent %d  acked %d  errors %d  skipped %d  in %.1fs (%.0f msg/s)\n", r.Sent, r.Acked, r.Errors, r.Skipped, r.Seconds, r.Rate)
	fmt.Fprintf(w, "ack latency ms     p50 %.2f  p95 %.2f  p99 %.2f  max %.2f\n", r.AckLatency.P50, r.AckLatency.P95, r.AckLatency.P99, r.AckLatency.Max)
	if cfg.Verify {
		fmt.Fprintf(w, "stored %d  received live %d  lost %d  duplicated %d  reordered %d\n", r.Stored, r.ReceivedLive, r.Lost, r.Duplicated, r.Reordered)
		fmt.Fprintf(w, "e2e latency ms     p50 %.2f  p95 %.2f  p99 %.2f  max %.2f\n", r.E2ELatency.P50, r.E2ELatency.P95, r.E2ELatency.P99, r.E2ELatency.Max)
	}
	if c := r.Commands; c != nil {
		fmt.Fprintf(w, "commands sent %d  answered %d  lost %d (%.0f/s)\n", c.Sent, c.Answered, c.Lost, float64(c.Answered)/max(r.Seconds, 1e-9))
		fmt.Fprintf(w, "command round trip ms  p50 %.2f  p95 %.2f  p99 %.2f  max %.2f\n", c.RoundTrip.P50, c.RoundTrip.P95, c.RoundTrip.P99, c.RoundTrip.Max)
	}
}

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg := simulator.NewConfig()
	fs := flag.NewFlagSet("telesim replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("file", "", "CSV file: a timestamp column (Unix ms or RFC 3339), a device column, one column per metric")
	speed := fs.Float64("speed", 1, "replay speed: 1 real time, 10 ten times faster, 0 as fast as possible")
	fs.StringVar(&cfg.Broker, "broker", cfg.Broker, "MQTT broker URL")
	fs.StringVar(&cfg.Username, "username", "", "MQTT username")
	fs.StringVar(&cfg.Password, "password", "", "MQTT password")
	qos := fs.Uint("qos", 1, "MQTT QoS: 0, 1 or 2")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *file == "" || *qos > 2 || *speed < 0 {
		fmt.Fprintln(stderr, "telesim replay: --file is required, --qos is 0..2, --speed is not negative")
		return 2
	}
	cfg.QoS = byte(*qos)
	f, err := os.Open(*file)
	if err != nil {
		fmt.Fprintln(stderr, "telesim replay:", err)
		return 1
	}
	defer f.Close()
	rows, err := simulator.ReadCSV(f)
	if err != nil {
		fmt.Fprintf(stderr, "telesim replay: %s: %v\n", *file, err)
		return 1
	}
	sent, acked, err := simulator.Replay(ctx, simulator.ReplayConfig{Fleet: cfg, Speed: *speed}, rows)
	fmt.Fprintf(stdout, "replayed %d rows, %d acknowledged\n", sent, acked)
	if err != nil {
		fmt.Fprintln(stderr, "telesim replay:", err)
		return 1
	}
	return 0
}
