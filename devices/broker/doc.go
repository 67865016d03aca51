// Package broker runs the embedded MQTT broker (mochi-mqtt v2) and takes
// telemetry from it in-process through a hook, so that a QoS 1 publish is
// acknowledged only once its row is committed.
//
// One file per concern, in the order a connection meets them: conn.go (write
// deadlines), limits.go (connection cap, keep alive, rate), auth.go
// (credentials, ACL), registry.go (what the hub knows of each connection),
// presence.go (devices online), hook.go (the path of a publish), order.go and
// ack.go (acknowledgements in order, written without waiting on any one
// client), log.go (mochi's logs without secrets).
//
// It imports devices and mochi only; it hands messages to a
// devices.MessageWriter and knows nothing of SQLite.
package broker
