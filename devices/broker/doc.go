// Package broker runs the embedded MQTT broker (mochi-mqtt v2) and takes
// telemetry from it in-process through a hook, so that a QoS 1 publish is
// acknowledged only once its row is committed.
//
// It imports devices and mochi only; it hands messages to a
// devices.MessageWriter and knows nothing of SQLite.
package broker
