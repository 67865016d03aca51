package sqlite_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store"
	"github.com/telehub/telehub/store/sqlite"
	"github.com/telehub/telehub/store/storetest"
)

// brokenEnv names the fault (storetest.Faults) that TestConformance's
// subprocess runs with.
const brokenEnv = "TELEHUB_STORETEST_FAULT"

// sqliteBackend is the SQLite backend as the conformance suite opens it: a
// file in the test's temporary directory.
var sqliteBackend = storetest.Backend{
	NewDB: func(t testing.TB) string { return filepath.Join(t.TempDir(), "telehub.db") },
	Open: func(db string, o store.Options) (devices.Store, error) {
		s, err := sqlite.Open(db, o)
		if err != nil {
			return nil, err
		}
		if fault := os.Getenv(brokenEnv); fault != "" {
			return storetest.Broken(s, fault), nil
		}
		return s, nil
	},
}

func TestConformance(t *testing.T) { storetest.Run(t, sqliteBackend) }

// TestConformance_CatchesFaults runs the suite on deliberately broken
// stores, in a subprocess each: each fault must fail its subtest.
func TestConformance_CatchesFaults(t *testing.T) {
	if os.Getenv(brokenEnv) != "" {
		t.Skip("inside a faulty run")
	}
	for fault, subtest := range storetest.Faults {
		t.Run(fault, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestConformance$/^"+subtest+"$", "-test.count=1")
			cmd.Env = append(os.Environ(), brokenEnv+"="+fault)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a store with fault %q:\n%s", fault, out)
			}
			if !strings.Contains(string(out), "--- FAIL: TestConformance/"+subtest) {
				t.Fatalf("fault %q: want subtest %s to fail; output:\n%s", fault, subtest, out)
			}
		})
	}
}
