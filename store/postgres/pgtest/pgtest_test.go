package pgtest_test

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/telehub/telehub/store/postgres/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// TestNewDB: each test gets an empty database of its own on the private
// server, on loopback.
func TestNewDB(t *testing.T) {
	url := pgtest.NewDB(t)
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var n int
	var addr string
	if err := c.QueryRow(ctx, `SELECT count(*), coalesce(inet_server_addr()::text, '') FROM pg_tables WHERE schemaname = 'public'`).Scan(&n, &addr); err != nil {
		t.Fatal(err)
	}
	if n != 0 || addr != "127.0.0.1/32" {
		t.Fatalf("tables=%d server address %q; want an empty database on 127.0.0.1", n, addr)
	}
}
