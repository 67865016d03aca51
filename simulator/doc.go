// Package simulator drives Telehub with virtual devices: signal profiles
// (thermostat, tracker, meter, or a custom payload template), fleets with a
// rate, ramp and jitter, devices that behave like real ones (last will,
// retained online status, reconnect with backoff, resumed sequence), and the
// measurement of what arrived: acknowledged, stored, and seen live by a
// browser, with latencies.
//
// It imports devices (topic scheme) and its MQTT and WebSocket clients.
package simulator
