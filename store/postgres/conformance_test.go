package postgres_test

import (
	"context"
	"os"
	"testing"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store"
	"github.com/telehub/telehub/store/postgres"
	"github.com/telehub/telehub/store/postgres/pgtest"
	"github.com/telehub/telehub/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// pgBackend is the PostgreSQL backend as the conformance suite opens it: a
// database of its own on the package's private server.
var pgBackend = storetest.Backend{
	NewDB: pgtest.NewDB,
	Open: func(db string, o store.Options) (devices.Store, error) {
		return postgres.Open(context.Background(), db, o)
	},
}

func TestConformance(t *testing.T) { storetest.Run(t, pgBackend) }
