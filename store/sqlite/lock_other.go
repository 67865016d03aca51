//go:build !unix

package sqlite

// writerLock is a no-op where flock(2) does not exist: there, run one hub
// per database file by hand.
type writerLock struct{}

func lockWriter(string) (*writerLock, error) { return &writerLock{}, nil }

func (l *writerLock) release() error { return nil }
