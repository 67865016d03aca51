package simulator

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/telehub/telehub/devices"
)

type fleet struct {
	cfg     *Config
	tls     *tls.Config
	devices []*device
	byID    map[string]*device
	ackLat  *recorder
	stats   struct {
		sent, acked, errors, skipped, connects, disconnects atomic.Int64
		applied                                             atomic.Int64 // shared-attribute updates applied
	}
}

// Run connects the fleet, publishes until cfg.Duration, cfg.Count or ctx
// ends, waits for outstanding acknowledgements, disconnects each device
// cleanly (publishing "offline" first), and returns what it measured. With
// cfg.Verify it also checks what the hub at cfg.HubURL stored and pushed.
func Run(ctx context.Context, cfg *Config) (*Report, error) {
	if cfg.Scheme == nil {
		cfg.Scheme = devices.DefaultScheme()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	f := &fleet{cfg: cfg, byID: make(map[string]*device), ackLat: newRecorder()}
	if strings.HasPrefix(cfg.Broker, "ssl") || strings.HasPrefix(cfg.Broker, "tls") || strings.HasPrefix(cfg.Broker, "mqtts") || cfg.CA != "" || cfg.Cert != "" {
		var err error
		if f.tls, err = cfg.tlsConfig(); err != nil {
			return nil, err
		}
	}
	tokens, err := cfg.tokens()
	if err != nil {
		return nil, err
	}
	for i := 0; i < cfg.Devices; i++ {
		rng := rand.New(rand.NewPCG(uint64(cfg.Seed), uint64(i)))
		d := &device{id: cfg.deviceID(i), fleet: f, rng: rng}
		if cfg.Profile == "custom" {
			d.tmpl, _ = ParseTemplate(cfg.Template)
		} else if d.profile, err = NewProfile(cfg.Profile, rng, ""); err != nil {
			return nil, err
		}
		user := cfg.Username
		if tokens != nil {
			user = tokens[i%len(tokens)]
		}
		d.client = paho.NewClient(d.options(cfg, user))
		f.devices = append(f.devices, d)
		f.byID[d.id] = d
	}

	var v *verifier
	if cfg.Verify {
		if v, err = newVerifier(ctx, f); err != nil {
			return nil, err
		}
		defer v.close()
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.Duration > 0 {
		runCtx, cancel = context.WithTimeout(runCtx, cfg.Duration)
		defer cancel()
	}
	stopStatus := f.statusLoop(runCtx)
	defer stopStatus()

	var cmds *CommandReport
	waitCommands := func() {}
	if cfg.CommandRate > 0 {
		cmds = &CommandReport{}
		waitCommands = f.commandLoop(runCtx, cmds)
	}
	start := time.Now()
	started := 0
	var wg sync.WaitGroup
	ramp := time.NewTicker(time.Duration(float64(time.Second) / cfg.Ramp))
	defer ramp.Stop()
	for i, d := range f.devices {
		if i > 0 {
			select {
			case <-ramp.C:
			case <-runCtx.Done():
			}
		}
		if runCtx.Err() != nil {
			break
		}
		d.client.Connect() // retries in the background until connected
		started++
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.run(runCtx, 30*time.Second)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	waitCommands()

	// Disconnect cleanly: a device that leaves says so.
	for _, d := range f.devices {
		if d.client.IsConnectionOpen() {
			tok := d.client.Publish(cfg.Scheme.Topic(d.id, devices.KindStatus), 1, true, "offline")
			tok.WaitTimeout(5 * time.Second)
		}
		d.client.Disconnect(250)
	}

	r := &Report{
		Devices: cfg.Devices, Connects: f.stats.connects.Load(), Disconnects: f.stats.disconnects.Load(),
		Sent: f.stats.sent.Load(), Acked: f.stats.acked.Load(), Errors: f.stats.errors.Load(), Skipped: f.stats.skipped.Load(),
		Seconds: elapsed.Seconds(), AckLatency: f.ackLat.percentiles(), Commands: cmds,
		AttributesApplied: f.stats.applied.Load(),
	}
	r.Rate = float64(r.Sent) / max(r.Seconds, 1e-9)
	for _, d := range f.devices[:started] {
		if !d.everConnected.Load() {
			r.NeverConnected++
		}
	}
	if v != nil {
		// Stopped by Ctrl-C or not, what was sent is checked: the run's
		// context may be done, so the check gets one of its own.
		vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), verifyTimeout)
		defer cancel()
		if err := v.finish(vctx, r); err != nil {
			return r, fmt.Errorf("verify: %w", err)
		}
	}
	if r.NeverConnected > 0 {
		return r, fmt.Errorf("%d of %d devices never connected to %s: is the broker running, and does it accept their credentials?", r.NeverConnected, started, cfg.Broker)
	}
	return r, nil
}

// verifyTimeout bounds the check of what the hub stored after a run.
const verifyTimeout = time.Minute

// statusLoop prints a one-line status every second until stopped.
func (f *fleet) statusLoop(ctx context.Context) (stop func()) {
	if f.cfg.Status == nil {
		return func() {}
	}
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		var lastSent int64
		for {
			select {
			case <-done:
				fmt.Fprintln(f.cfg.Status)
				return
			case <-tick.C:
			}
			connected := 0
			for _, d := range f.devices {
				if d.client.IsConnectionOpen() {
					connected++
				}
			}
			sent := f.stats.sent.Load()
			fmt.Fprintf(f.cfg.Status, "\rconnected %d/%d  sent %d  acked %d  errors %d  rate %d/s   ",
				connected, len(f.devices), sent, f.stats.acked.Load(), f.stats.errors.Load(), sent-lastSent)
			lastSent = sent
		}
	}()
	return func() { close(done); <-exited }
}
