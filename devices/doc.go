// Package devices is Telehub's domain: devices, messages and their sequence
// numbers, the topic scheme, payload decoding, the live Feed, and the service
// interfaces that the adapters (store, broker, ingest, dashboard) implement or
// consume.
//
// It imports the standard library only; every other package depends on it,
// never the other way round.
package devices
