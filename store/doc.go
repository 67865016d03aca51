// Package store keeps Telehub's data in SQLite (modernc.org/sqlite, no cgo):
// the schema and its migrations, the single Writer that group-commits
// messages and acknowledges them only after commit, and the readers behind
// the REST API and WebSocket replay.
//
// It imports the devices package and its SQLite driver only.
package store
