package store

// Query builders, exposed to the plan test.
var (
	MessagesQuery = messagesQuery
	ReplayQuery   = replayQuery
)
