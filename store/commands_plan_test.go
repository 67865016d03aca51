package store_test

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	"github.com/telehub/telehub/store"
	"github.com/telehub/telehub/store/sqlite"
)

// TestOpenCommandPlans: the queries of open commands read an index of
// open commands, never every command: they run at every new command and
// every second, and a hub keeps millions of finished ones.
func TestOpenCommandPlans(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	st, err := sqlite.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for name, q := range store.OpenCommandQueries {
		rows, err := db.Query("EXPLAIN QUERY PLAN "+q.Query, q.Args...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		all := strings.Join(plan, "; ")
		if !strings.Contains(all, "commands_open") && !strings.Contains(all, "commands_device_open") {
			t.Errorf("%s reads no index of open commands: %s", name, all)
		}
	}
}
