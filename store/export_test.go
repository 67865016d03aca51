package store

// MessagesQuery exposes the query builder to the plan test.
var MessagesQuery = messagesQuery
