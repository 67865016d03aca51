package store

// Internals exposed to the tests.
var (
	MessagesQuery = messagesQuery
	ReplayQuery   = replayQuery
	SeriesRaw     = (*MessageService).seriesRaw
)
