package postgres

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store"
)

// Store is the PostgreSQL backend as one devices.Store.
type Store struct {
	*Writer
	*MessageService
	*store.Credentials
	*store.Commands
	*store.Twins
	*store.Events
	*store.Alerts
	*store.SavedBoards
	DB *DB
}

var _ devices.Store = (*Store)(nil)

// Open connects to the database at url, applies its migrations and starts
// its writer with o. The caller drains and closes the Store.
func Open(ctx context.Context, url string, o store.Options) (*Store, error) {
	db, err := OpenDB(ctx, url, o.Logger)
	if err != nil {
		return nil, err
	}
	w := NewWriter(db)
	o.Configure(&w.Pipeline)
	w.OnStatus, w.Retention.Hub, w.OnCommit = o.OnStatus, o.Retention, o.OnCommit
	if err := w.Open(ctx); err != nil {
		db.Close()
		return nil, err
	}
	writes := &store.GroupTx{DB: db.SQL}
	reads := &store.Stmts{DB: db.SQL}
	return &Store{Writer: w, MessageService: NewMessageService(db, w.Summaries()), Credentials: NewCredentials(db),
		Commands: &store.Commands{ReadDB: reads, Writes: writes}, Twins: &store.Twins{ReadDB: reads, Writes: writes}, Events: &store.Events{ReadDB: reads}, Alerts: &store.Alerts{ReadDB: reads, Writes: writes}, SavedBoards: &store.SavedBoards{ReadDB: reads, Writes: writes}, DB: db}, nil
}

// LastSeq implements devices.MessageService.
func (s *Store) LastSeq() devices.Seq { return s.MessageService.LastSeq() }

// Drain implements devices.Store.
func (s *Store) Drain(ctx context.Context) error { return s.Writer.Close(ctx) }

// Close implements devices.Store.
func (s *Store) Close() error {
	return errors.Join(s.Writer.Close(context.Background()), s.DB.Close())
}

// CreateCommand implements devices.CommandStore, and tells the other hubs:
// the device may be connected to one of them.
func (s *Store) CreateCommand(ctx context.Context, c devices.Command) (*devices.Command, error) {
	cmd, err := s.Commands.CreateCommand(ctx, c)
	if err == nil {
		s.Writer.notifyDownlink(ctx, "command", c.Device)
	}
	return cmd, err
}

// SetAttributes implements devices.AttributeStore, and tells the other
// hubs of a change of shared attributes.
func (s *Store) SetAttributes(ctx context.Context, device string, scope devices.AttributeScope, set map[string]json.RawMessage, replace bool, at int64) (map[string]json.RawMessage, error) {
	changed, err := s.Twins.SetAttributes(ctx, device, scope, set, replace, at)
	if err == nil && scope == devices.AttrShared && len(changed) > 0 {
		s.Writer.notifyDownlink(ctx, "attributes", device)
	}
	return changed, err
}

// CreateRule, UpdateRule, DeleteRule and SyncFileRules implement
// devices.AlertStore, and tell the other hubs: the evaluator runs on the
// leading one.
func (s *Store) CreateRule(ctx context.Context, r devices.Rule) (*devices.Rule, error) {
	out, err := s.Alerts.CreateRule(ctx, r)
	s.rulesChanged(ctx, err)
	return out, err
}

func (s *Store) UpdateRule(ctx context.Context, r devices.Rule) (*devices.Rule, error) {
	out, err := s.Alerts.UpdateRule(ctx, r)
	s.rulesChanged(ctx, err)
	return out, err
}

func (s *Store) DeleteRule(ctx context.Context, id int64, at int64) error {
	err := s.Alerts.DeleteRule(ctx, id, at)
	s.rulesChanged(ctx, err)
	return err
}

func (s *Store) SyncFileRules(ctx context.Context, rules []devices.Rule, at int64) (added, changed, removed int, err error) {
	added, changed, removed, err = s.Alerts.SyncFileRules(ctx, rules, at)
	if added+changed+removed > 0 {
		s.rulesChanged(ctx, err)
	}
	return added, changed, removed, err
}

func (s *Store) rulesChanged(ctx context.Context, err error) {
	if err == nil {
		s.Writer.notifyDownlink(ctx, "rules", "*")
	}
}
