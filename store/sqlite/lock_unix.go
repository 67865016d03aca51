//go:build unix

package sqlite

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// writerLock is an exclusive lock on a database file's writer, held by the
// one Writer of a process: a second hub on the same file would fight the
// first over every sequence number. It is a flock(2) on PATH-writer.lock,
// a file of its own: a second descriptor on the database file would
// release SQLite's own (POSIX) locks when closed.
type writerLock struct{ f *os.File }

func lockWriter(dbPath string) (*writerLock, error) {
	path := dbPath + "-writer.lock"
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another process"
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				holder = "process " + strconv.Itoa(pid)
			}
			return nil, fmt.Errorf("database %s is in use by %s (it holds %s); run one hub per database", dbPath, holder, path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &writerLock{f: f}, nil
}

// release drops the lock. The file stays: removing it could let a third
// process lock a new file while a second still waits on the old one.
func (l *writerLock) release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
