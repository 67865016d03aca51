package store

import (
	"context"
	"database/sql"
	"sync"
)

// Stmts runs queries on a pool through statements prepared once per text
// (database/sql prepares each on a connection when it first runs there):
// SQLite parses a statement on every plain Exec, and at thousands of
// commands a second parsing alone took a seventh of the hub's CPU.
type Stmts struct {
	DB *sql.DB

	mu sync.Mutex
	m  map[string]*sql.Stmt
}

func (s *Stmts) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.m[q]; ok {
		return st, nil
	}
	if len(s.m) >= maxStmts { // unbounded texts (IN lists): do not keep them all
		for k, st := range s.m {
			st.Close()
			delete(s.m, k)
		}
	}
	st, err := s.DB.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	if s.m == nil {
		s.m = make(map[string]*sql.Stmt)
	}
	s.m[q] = st
	return st, nil
}

// maxStmts bounds a cache.
const maxStmts = 256

// QueryContext runs q through its prepared statement.
func (s *Stmts) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := s.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// QueryRowContext runs q through its prepared statement.
func (s *Stmts) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	st, err := s.stmt(ctx, q)
	if err != nil {
		return s.DB.QueryRowContext(ctx, q, args...) // reports the same error
	}
	return st.QueryRowContext(ctx, args...)
}

// ExecContext runs q through its prepared statement.
func (s *Stmts) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	st, err := s.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// ConnStmts is Stmts for one connection used by one goroutine at a time
// (SQLite's writer): an Execer whose statements are prepared once.
type ConnStmts struct {
	Conn *sql.Conn
	m    map[string]*sql.Stmt
}

func (c *ConnStmts) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := c.m[q]; ok {
		return st, nil
	}
	if len(c.m) >= maxStmts {
		c.Close()
	}
	st, err := c.Conn.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	if c.m == nil {
		c.m = make(map[string]*sql.Stmt)
	}
	c.m[q] = st
	return st, nil
}

// ExecContext implements Execer.
func (c *ConnStmts) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if len(args) == 0 { // SAVEPOINT and the like: nothing to reuse
		return c.Conn.ExecContext(ctx, q)
	}
	st, err := c.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// QueryContext implements Execer.
func (c *ConnStmts) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := c.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// QueryRowContext implements Execer.
func (c *ConnStmts) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	st, err := c.stmt(ctx, q)
	if err != nil {
		return c.Conn.QueryRowContext(ctx, q, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// Close closes the prepared statements.
func (c *ConnStmts) Close() {
	for k, st := range c.m {
		st.Close()
		delete(c.m, k)
	}
}
