package store

// Internals exposed to the tests.
var (
	MessagesQuery = messagesQuery
	ReplayQuery   = replayQuery
	ReplayFarSeqs = replayFarSeqs
	SeriesRaw     = (*MessageService).seriesRaw
)
