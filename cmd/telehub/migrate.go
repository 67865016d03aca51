package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/telehub/telehub/store/postgres"
	"github.com/telehub/telehub/store/sqlite"
)

// runMigrate serves "telehub migrate --from FILE --to URL": it copies a
// SQLite database into PostgreSQL, resumably, printing its progress.
func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("telehub migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", "", "the SQLite database to copy (only read)")
	to := fs.String("to", "", "the PostgreSQL database, postgres://user:password@host:5432/db?sslmode=...")
	chunk := fs.Int("chunk", postgres.DefaultImportChunk, "messages per transaction")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `Usage: telehub migrate --from telehub.db --to postgres://...

Copies a SQLite database into PostgreSQL: devices, messages, credentials and
API tokens, retention overrides, status events, commands and attributes,
alert rules and alerts. The SQLite file is only read. Messages go in chunks, each committed with the
counter: an interrupted run resumes where it stopped when started again,
and a second run copies only what the file gained since. Stop the hub on
either database first; then start it with --db postgres://...`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *from == "" || !isPostgres(*to) || *chunk <= 0 || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	src, err := sqlite.OpenReadOnly(*from)
	if err != nil {
		fmt.Fprintln(stderr, "telehub migrate:", err)
		return 1
	}
	defer src.Close()
	db, err := postgres.OpenDB(ctx, *to, nil)
	if err != nil {
		fmt.Fprintln(stderr, "telehub migrate:", err)
		return 1
	}
	defer db.Close()
	last := time.Time{}
	progress := func(table string, done, total int64, rate float64) {
		if table != "messages" {
			fmt.Fprintf(stderr, "%s: %d rows\n", table, done)
			return
		}
		if done < total && time.Since(last) < time.Second {
			return
		}
		last = time.Now()
		pct := 100.0
		if total > 0 {
			pct = 100 * float64(done) / float64(total)
		}
		fmt.Fprintf(stderr, "messages: %d of %d (%.1f%%), %.0f rows/s\n", done, total, pct, rate)
	}
	if err := postgres.ImportSQLite(ctx, db, src, *chunk, progress); err != nil {
		fmt.Fprintln(stderr, "telehub migrate:", err, "(run it again to resume)")
		return 1
	}
	fmt.Fprintf(stdout, "copied %s to %s\n", *from, redactDSN(*to))
	return 0
}
