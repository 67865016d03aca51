package store

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
)

// Execer is a transaction under way: a *sql.Tx, or a connection inside a
// transaction begun by hand (SQLite's writer).
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// GroupTx commits the writes of concurrent callers together: what is
// submitted while a group is under way goes into the next one, each
// caller's part undone alone when it fails, so that one commit (one fsync)
// serves many callers and one caller's failure undoes only its part. The
// first caller to find no group under way starts a goroutine that runs
// them until the queue is empty. Commands and attributes use it:
// at thousands of commands a second, each status change in its own
// transaction would be bound by the disk.
type GroupTx struct {
	// DB runs each group in a transaction of its own, unless Ride is set.
	DB *sql.DB
	// Ride, when set, hands each group to the backend, which applies it
	// inside its next commit of messages (one fsync for both; SQLite's
	// writer, which also keeps these writes from contending with message
	// commits for the database's write lock) and then settles it with the
	// commit's outcome. It returns an error when the backend takes no more
	// work (closed).
	Ride func(apply func(x Execer) (settle func(commitErr error))) error

	mu      sync.Mutex
	queue   []*txOp
	running bool
}

type txOp struct {
	fn       func(x Execer) error
	done     chan error
	answered bool         // done has its answer already (its part failed)
	state    atomic.Int32 // opQueued, then opStarted or opCancelled
}

// The states of a txOp: a caller that stops waiting cancels its op if it
// has not started, and otherwise waits for its outcome, so that fn never
// runs while (or after) its caller reads what fn writes.
const (
	opQueued int32 = iota
	opStarted
	opCancelled
)

// run runs the op's fn unless its caller cancelled it (then it reports
// nil and the op is left out).
func (op *txOp) run(x Execer) error {
	if !op.state.CompareAndSwap(opQueued, opStarted) && op.state.Load() == opCancelled {
		op.answered = true // nobody waits
		return nil
	}
	return op.fn(x)
}

// Do runs fn in a transaction shared with other callers and returns once
// that transaction committed (nil) or fn or the commit failed. What fn
// reads or computes is the caller's only when Do returns nil. fn may run
// twice (when another part of its group fails, the group runs again), so
// it sets what it computes rather than adding to it. When ctx ends before
// fn started, fn never runs and Do returns ctx's error; once it started,
// Do waits for the outcome (a commit's time at most).
func (g *GroupTx) Do(ctx context.Context, fn func(x Execer) error) error {
	return g.Submit(fn)(ctx)
}

// enqueue queues fn; lead tells that no group is under way, so the caller
// must run them.
func (g *GroupTx) enqueue(fn func(x Execer) error) (op *txOp, lead bool) {
	op = &txOp{fn: fn, done: make(chan error, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, op)
	lead = !g.running
	g.running = true
	g.mu.Unlock()
	return op, lead
}

// wait returns the op's outcome, or ctx's error if ctx ends before the op
// started (it then never runs); once started, the op's outcome.
func (op *txOp) wait(ctx context.Context) error {
	select {
	case err := <-op.done:
		return err
	case <-ctx.Done():
		if op.state.CompareAndSwap(opQueued, opCancelled) {
			return ctx.Err()
		}
		return <-op.done
	}
}

// Submit queues fn like Do, without waiting: what one caller submits is
// applied in the order it submitted it (and after what it submitted with
// Do), so that a caller's consecutive writes can share a commit. wait
// returns fn's outcome once its transaction ended, like Do.
//
// The groups run in a goroutine that lives while there are writes queued,
// never in a caller's: under a steady stream of writes the queue seldom
// empties, and a caller that ran the groups would wait for all of them
// (seen: a command's creation answered after up to a second, its own
// commit long done).
func (g *GroupTx) Submit(fn func(x Execer) error) (wait func(ctx context.Context) error) {
	op, lead := g.enqueue(fn)
	if lead {
		go g.run()
	}
	return op.wait
}

// applyAll runs every part of batch, and reports false at the first that
// fails (the group is then run again part by part).
func applyAll(x Execer, batch []*txOp) bool {
	for _, op := range batch {
		if op.run(x) != nil {
			return false
		}
	}
	return true
}

// maxGroup bounds the callers one transaction serves.
const maxGroup = 256

func (g *GroupTx) run() {
	for {
		g.mu.Lock()
		n := min(len(g.queue), maxGroup)
		batch := g.queue[:n:n]
		g.queue = g.queue[n:]
		if n == 0 {
			g.queue, g.running = nil, false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		g.commit(batch)
	}
}

// commit applies batch and waits for its outcome.
func (g *GroupTx) commit(batch []*txOp) {
	if g.Ride != nil {
		settled := make(chan struct{})
		err := g.Ride(func(x Execer) func(error) {
			settle := apply(x, batch)
			return func(err error) { settle(err); close(settled) }
		})
		if err != nil {
			for _, op := range batch {
				op.done <- err
			}
			return
		}
		<-settled
		return
	}
	ctx := context.Background()
	tx, err := g.DB.BeginTx(ctx, nil)
	if err != nil {
		apply(nil, batch)(err)
		return
	}
	settle := apply(tx, batch)
	err = tx.Commit()
	if err != nil {
		tx.Rollback()
	}
	settle(err)
}

// apply runs batch's parts inside a savepoint of x for the whole group,
// answering at once the callers whose part failed; settle answers the
// others with the commit's outcome. The parts first run one after the
// other as they are; only when one fails is the group rolled back and run
// again with each part in a savepoint of its own, so that the failure
// undoes that part only (two statements fewer per part in the usual case,
// where none fails: at thousands of command changes a second, the
// savepoints cost more than the changes). When the savepoints themselves
// fail, the group is rolled back and everyone gets that error. With x nil,
// nothing runs and settle answers everyone.
func apply(x Execer, batch []*txOp) (settle func(commitErr error)) {
	var broken error
	ctx := context.Background()
	exec := func(q string) {
		if broken == nil {
			_, broken = x.ExecContext(ctx, q)
		}
	}
	if x != nil {
		exec("SAVEPOINT telehub_group")
		if broken == nil && !applyAll(x, batch) {
			exec("ROLLBACK TO SAVEPOINT telehub_group")
			for i, op := range batch {
				if broken != nil {
					break
				}
				sp := fmt.Sprintf("telehub_op%d", i)
				exec("SAVEPOINT " + sp)
				if broken != nil {
					break
				}
				if err := op.run(x); err != nil {
					exec("ROLLBACK TO SAVEPOINT " + sp)
					op.done <- err
					op.answered = true
				}
				exec("RELEASE SAVEPOINT " + sp)
			}
		}
		if broken != nil {
			x.ExecContext(ctx, "ROLLBACK TO SAVEPOINT telehub_group")
		}
		x.ExecContext(ctx, "RELEASE SAVEPOINT telehub_group")
	}
	return func(commitErr error) {
		err := commitErr
		if broken != nil {
			err = broken
		}
		for _, op := range batch {
			if !op.answered {
				op.done <- err
			}
		}
	}
}
