package main

import (
	"context"
	"errors"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store"
	"github.com/telehub/telehub/store/postgres"
	"github.com/telehub/telehub/store/sqlite"
)

// isPostgres reports whether --db names a PostgreSQL database (a
// postgres:// or postgresql:// URL) rather than a SQLite file.
func isPostgres(db string) bool {
	return strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://")
}

// redactDSN is --db as it may be logged: a URL's password is masked.
func redactDSN(db string) string {
	if u, err := url.Parse(db); err == nil && isPostgres(db) {
		return u.Redacted()
	}
	return db
}

// storeOptions are the backend settings from the configuration.
func (m *Main) storeOptions() store.Options {
	cfg := m.Config
	o := store.Options{
		MaxBatch:      cfg.BatchMax,
		Linger:        cfg.CommitLinger,
		QueueSize:     cfg.QueueSize,
		MaxMetrics:    cfg.MaxMetrics,
		MaxMetricName: cfg.MaxMetricName,
		OnCommit:      m.Feed.Publish,
		OnStatus:      func(ev devices.StatusEvent) { m.Feed.Publish([]devices.Message{ev.FeedMessage()}) },
		Observe:       m.observeCommit,
		Stats:         m.Stats,
		Logger:        m.Logger,
	}
	o.Retention, _ = devices.ParseRetention(cfg.Retention) // checked by Validate
	o.MaxDBSize, _ = parseSize(cfg.MaxDBSize)
	return o
}

// openStore opens the backend --db selects.
func (m *Main) openStore() error {
	if isPostgres(m.Config.DB) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := postgres.Open(ctx, m.Config.DB, m.storeOptions())
		if err != nil {
			return err
		}
		m.Store = s
		return nil
	}
	s, err := sqlite.Open(m.Config.DB, m.storeOptions())
	if err != nil {
		return err
	}
	m.Store, m.SQLite = s, s
	return nil
}

// openCredentials opens only the credentials of the database db, for the
// CLI (which works while the hub runs). With mustExist, a SQLite file that
// does not exist yet is not created: it returns nil, nil.
func openCredentials(ctx context.Context, db string, mustExist bool) (devices.CredentialService, func() error, error) {
	if isPostgres(db) {
		d, err := postgres.OpenDB(ctx, db, nil)
		if err != nil {
			return nil, nil, err
		}
		return postgres.NewCredentials(d), d.Close, nil
	}
	if mustExist {
		if _, err := os.Stat(db); errors.Is(err, os.ErrNotExist) {
			return nil, nil, nil
		}
	}
	d := sqlite.NewDB(db)
	if err := d.Open(); err != nil {
		return nil, nil, err
	}
	return sqlite.NewCredentials(d), d.Close, nil
}

// followDownlink lets, on PostgreSQL, a command or an attribute change made
// through another hub reach a device connected to this one.
func (m *Main) followDownlink() {
	p, ok := m.Store.(*postgres.Store)
	if !ok {
		return
	}
	d := m.Downlink
	d.Shared = true
	p.SetDownlinkHook(func(kind, device string) {
		switch kind {
		case "attributes":
			d.AttributesListening(device)
		case "rules": // changed on another hub: the evaluator may be here
			m.Alerts.RulesChanged()
		default:
			d.Listening(device)
		}
	})
}
