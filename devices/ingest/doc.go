// Package ingest subscribes to an external MQTT broker (Mosquitto, EMQX, ...)
// with paho and hands every telemetry and status message to a
// devices.MessageWriter, acknowledging each to the broker only after its row
// is committed.
//
// It imports devices and paho only.
package ingest
