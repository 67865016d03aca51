// Package sqlite is Telehub's embedded store, the default: SQLite
// (modernc.org/sqlite, no cgo) in one file, with its schema and migrations,
// the single Writer that group-commits messages and acknowledges them only
// after commit, and the readers behind the REST API and WebSocket replay.
//
// It imports the devices package and its SQLite driver only.
package sqlite
