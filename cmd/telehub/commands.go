package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"reflect"
	"strings"
	"time"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store/sqlite"
)

// runCommand runs a subcommand and returns its exit code, or -1 when args
// do not name one (then they are the hub's flags).
func runCommand(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return -1
	}
	switch args[0] {
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "telehub", devices.BuildVersion())
		return 0
	case "backup":
		return runBackup(ctx, args[1:], getenv, stdout, stderr)
	case "device", "token":
		return runCredentials(ctx, args[0], args[1:], getenv, stdout, stderr)
	case "migrate":
		return runMigrate(ctx, args[1:], stdout, stderr)
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
	if isPostgres(*dbPath) {
		fmt.Fprintln(stderr, "telehub backup: backs up a SQLite file; back PostgreSQL up with its own tools (pg_dump, pg_basebackup)")
		return 2
	}
	db := sqlite.NewDB(*dbPath)
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
	// The rule the hub applies at start that needs the database: a
	// non-loopback --http needs an API token.
	if err := checkHTTPExposure(cfg, func() (bool, error) { return dbHasTokens(cfg.DB) }); err != nil {
		fmt.Fprintln(stderr, "telehub config check:", err)
		return 2
	}
	v := reflect.ValueOf(cfg)
	for i := 0; i < v.NumField(); i++ {
		name, val := v.Type().Field(i).Name, fmt.Sprint(v.Field(i).Interface())
		if lower := strings.ToLower(name); (strings.Contains(lower, "password") || strings.Contains(lower, "token")) && val != "" {
			val = "(set, not shown)"
		}
		if u, err := url.Parse(val); name == "MQTTURL" && err == nil && u.User != nil {
			val = u.Redacted()
		}
		if name == "DB" {
			val = redactDSN(val)
		}
		fmt.Fprintf(stdout, "%-16s %s\n", name, val)
	}
	fmt.Fprintln(stdout, "configuration is valid")
	return 0
}

// dbHasTokens reports whether the database at path holds an API token; a
// database that does not exist yet holds none.
func dbHasTokens(path string) (bool, error) {
	ctx := context.Background()
	creds, closeDB, err := openCredentials(ctx, path, true)
	if err != nil || creds == nil {
		return false, err
	}
	defer closeDB()
	return creds.HasTokens(ctx)
}

// runCredentials serves "telehub device ..." and "telehub token ...":
// provisioning on the database, which works while the hub runs. A token is
// printed once, on stdout alone, so that it can be captured by a script.
func runCredentials(ctx context.Context, kind string, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("telehub "+kind, flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := "telehub.db"
	if v := getenv(envName("db")); v != "" {
		def = v
	}
	dbPath := fs.String("db", def, "the hub's database (env TELEHUB_DB)")
	scope := fs.String("scope", "read", "token add: read (GET and the live feed) or admin (everything)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `Usage: telehub device add NAME       a device credential; prints its token
       telehub device rotate NAME    a new token for NAME (the old one stops working)
       telehub device revoke NAME    delete NAME's credential
       telehub device list
       telehub token add NAME [--scope read|admin]   an API token; prints it
       telehub token revoke NAME
       telehub token list

Only hashes are stored: a token is shown once. A device connects to the
embedded broker with its token as MQTT username (or its id as username and
the token as password); --device-auth makes that required. API tokens go in
"Authorization: Bearer TOKEN" or the dashboard's login page; once one exists,
every API request needs one. Revoking through the CLI takes effect at the
device's next connection; DELETE /api/v1/devices/NAME/token also disconnects
it at once.`)
		fs.PrintDefaults()
	}
	if len(args) == 0 {
		fs.Usage()
		return 2
	}
	verb := args[0]
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	wantArgs := 1
	if verb == "list" {
		wantArgs = 0
	}
	if len(pos) != wantArgs {
		fs.Usage()
		return 2
	}
	creds, closeDB, err := openCredentials(ctx, *dbPath, false)
	if err != nil {
		fmt.Fprintf(stderr, "telehub %s: %v\n", kind, err)
		return 1
	}
	defer closeDB()
	var name string
	if len(pos) > 0 {
		name = pos[0]
	}
	var token string
	switch kind + " " + verb {
	case "device add":
		token, err = creds.AddDevice(ctx, name)
	case "device rotate":
		token, err = creds.RotateDevice(ctx, name)
	case "device revoke":
		if err = creds.RevokeDevice(ctx, name); err == nil {
			fmt.Fprintf(stderr, "revoked %s\n", name)
		}
	case "device list":
		var list []devices.Credential
		if list, err = creds.DeviceCredentials(ctx); err == nil {
			for _, c := range list {
				fmt.Fprintf(stdout, "%s\tcreated %s\n", c.Device, time.UnixMilli(c.Created).UTC().Format(time.RFC3339))
			}
		}
	case "token add":
		var sc devices.Scope
		if sc, err = devices.ParseScope(*scope); err == nil {
			token, err = creds.AddToken(ctx, name, sc)
		}
	case "token revoke":
		if err = creds.RevokeToken(ctx, name); err == nil {
			fmt.Fprintf(stderr, "revoked %s\n", name)
		}
	case "token list":
		var list []devices.APIToken
		if list, err = creds.Tokens(ctx); err == nil {
			for _, t := range list {
				fmt.Fprintf(stdout, "%s\t%s\tcreated %s\n", t.Name, t.Scope, time.UnixMilli(t.Created).UTC().Format(time.RFC3339))
			}
		}
	default:
		fs.Usage()
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "telehub %s %s: %v\n", kind, verb, err)
		return 1
	}
	if token != "" {
		fmt.Fprintln(stdout, token)
	}
	return 0
}

// parseInterspersed parses flags that may come before or after the
// positional arguments ("device add kitchen --db x.db"), and returns those.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}
