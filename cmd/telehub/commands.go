package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/telehub/telehub/store"
)

// runCommand runs a subcommand and returns its exit code, or -1 when args
// do not name one (then they are the hub's flags).
func runCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return -1
	}
	switch args[0] {
	case "backup":
		return runBackup(ctx, args[1:], getenv, stdout, stderr)
	case "config":
		if len(args) < 2 || args[1] != "check" {
			fmt.Fprintln(stderr, "usage: telehub config check [flags]")
			return 2
		}
		return runConfigCheck(args[2:], getenv, stdout, stderr)
	}
	return -1
}

// runBackup serves "telehub backup [--db FILE] BACKUP": a consistent copy of
// the database, taken while the hub runs.
func runBackup(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("telehub backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := "telehub.db"
	if v := getenv(envName("db")); v != "" {
		def = v
	}
	dbPath := fs.String("db", def, "the hub's database (env TELEHUB_DB)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `Usage: telehub backup [--db FILE] BACKUP

Writes a consistent, compacted copy of the database to BACKUP (which must not
exist) while the hub keeps running. To restore: stop the hub, move the
backup in place of --db and delete the old -wal and -shm files.`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return 2
	}
	db := store.NewDB(*dbPath)
	if err := db.Open(); err != nil {
		fmt.Fprintln(stderr, "telehub backup:", err)
		return 1
	}
	defer db.Close()
	if err := db.Backup(ctx, fs.Arg(0)); err != nil {
		fmt.Fprintln(stderr, "telehub backup:", err)
		return 1
	}
	fmt.Fprintf(stdout, "backed up %s to %s\n", *dbPath, fs.Arg(0))
	return 0
}

// runConfigCheck serves "telehub config check [flags]": it validates the
// flags and environment and prints the effective configuration, secrets
// masked.
func runConfigCheck(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := ParseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "telehub config check:", err)
		return 2
	}
	v := reflect.ValueOf(cfg)
	for i := 0; i < v.NumField(); i++ {
		name, val := v.Type().Field(i).Name, fmt.Sprint(v.Field(i).Interface())
		if strings.Contains(strings.ToLower(name), "password") && val != "" {
			val = "(set, not shown)"
		}
		fmt.Fprintf(stdout, "%-16s %s\n", name, val)
	}
	fmt.Fprintln(stdout, "configuration is valid")
	return 0
}
