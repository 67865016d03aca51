package sqlite

import (
	"context"
	"errors"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store"
)

// Store is the SQLite backend as one devices.Store: the database file, its
// single Writer, the readers and the credentials.
type Store struct {
	*Writer
	*MessageService
	*Credentials
	*store.Commands
	*store.Twins
	*store.Events
	*store.Alerts
	*store.SavedBoards
	DB *DB
}

var _ devices.Store = (*Store)(nil)

// Open opens (or creates) the database at path, applies its migrations and
// starts its writer with o.
func Open(path string, o store.Options) (*Store, error) {
	db := NewDB(path)
	if o.Logger != nil {
		db.Logger = o.Logger.With("component", "store")
	}
	if err := db.Open(); err != nil {
		return nil, err
	}
	w := NewWriter(db)
	o.Configure(&w.Pipeline)
	w.OnStatus, w.Retention.Hub, w.MaxDBSize = o.OnStatus, o.Retention, o.MaxDBSize
	if err := w.Open(); err != nil {
		db.Close()
		return nil, err
	}
	ms := NewMessageService(db)
	ms.Summaries = w.Summaries()
	// Commands and attributes are written by the writer, in groups riding
	// on its commits.
	writes := &store.GroupTx{Ride: w.Ride}
	reads := &store.Stmts{DB: db.read}
	return &Store{Writer: w, MessageService: ms, Credentials: NewCredentials(db), Commands: &store.Commands{ReadDB: reads, Writes: writes},
		Twins: &store.Twins{ReadDB: reads, Writes: writes}, Events: &store.Events{ReadDB: reads}, Alerts: &store.Alerts{ReadDB: reads, Writes: writes}, SavedBoards: &store.SavedBoards{ReadDB: reads, Writes: writes}, DB: db}, nil
}

// LastSeq implements devices.MessageService.
func (s *Store) LastSeq() devices.Seq { return s.MessageService.LastSeq() }

// Backup writes a consistent copy of the database to path (dashboard.Backuper).
func (s *Store) Backup(ctx context.Context, path string) error { return s.DB.Backup(ctx, path) }

// Drain implements devices.Store: the writer commits what it accepted and
// closes.
func (s *Store) Drain(ctx context.Context) error { return s.Writer.Close(ctx) }

// Close implements devices.Store.
func (s *Store) Close() error {
	return errors.Join(s.Writer.Close(context.Background()), s.DB.Close())
}
