// Package devices is Telehub's domain: devices, messages and their sequence
// numbers, the topic scheme, payload decoding, the live Feed, presence,
// commands and attributes (Downlink), and the interfaces that the adapters
// implement or consume, the store contract (Store) first among them.
//
// It imports the standard library only; every other package depends on it,
// never the other way round.
package devices
