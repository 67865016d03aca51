package store

// OpenCommandQueries are the queries of open commands, by name, with as
// many arguments as each takes.
var OpenCommandQueries = map[string]struct {
	Query string
	Args  []any
}{
	"CountPending":    {queryCountPending, []any{"d"}},
	"PendingCommands": {queryPending, []any{"d", int64(0)}},
	"DueCommands":     {queryDue, []any{int64(0), 500}},
	"QueuedDevices":   {queryQueuedDevices, []any{int64(0), 1000}},
}
