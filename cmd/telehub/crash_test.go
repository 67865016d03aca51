package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/telehub/telehub/store"
)

// hubProcess is the hub running in a child process (this test binary, see
// TestMain), so that it can be killed with SIGKILL.
type hubProcess struct {
	cmd      *exec.Cmd
	mqttAddr string
	httpURL  string
	exited   chan struct{}
}

var addrRe = regexp.MustCompile(`msg="mqtt broker listening" addr=(\S+)|msg="http listening" url=(\S+)`)

func startHubProcess(tb testing.TB, args ...string) *hubProcess {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "TELEHUB_TEST_CHILD=1", "TELEHUB_TEST_ARGS="+strings.Join(args, " "))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	h := &hubProcess{cmd: cmd, exited: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := addrRe.FindStringSubmatch(sc.Text()); m != nil {
				if m[1] != "" {
					h.mqttAddr = m[1]
				} else {
					h.httpURL = m[2]
					close(ready)
				}
			}
		}
		cmd.Wait()
		close(h.exited)
	}()
	tb.Cleanup(func() { cmd.Process.Kill(); <-h.exited })
	select {
	case <-ready:
	case <-h.exited:
		tb.Fatal("hub process exited before it was ready")
	case <-time.After(30 * time.Second):
		tb.Fatal("hub process not ready after 30s")
	}
	return h
}

// TestCrash_AckedMeansStored: a hub killed with SIGKILL while devices publish
// QoS 1 has every message whose PUBACK a device received on disk.
func TestCrash_AckedMeansStored(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test is not short")
	}
	dbPath := filepath.Join(t.TempDir(), "telehub.db")
	h := startHubProcess(t, "--db", dbPath, "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0")

	const nDevices, maxPerDevice = 5, 20000
	var mu sync.Mutex
	acked := map[string][]int{}
	var total atomic.Int64
	var wg sync.WaitGroup
	for d := 0; d < nDevices; d++ {
		device := fmt.Sprint("crash-", d)
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + h.mqttAddr).SetClientID(device).SetAutoReconnect(false))
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		defer c.Disconnect(0)
		toks := make(chan struct {
			n   int
			tok paho.Token
		}, 50) // 50 in flight per device
		wg.Add(2)
		go func() {
			defer wg.Done()
			defer close(toks)
			for n := 0; n < maxPerDevice && c.IsConnectionOpen(); n++ {
				toks <- struct {
					n   int
					tok paho.Token
				}{n, c.Publish("devices/"+device+"/telemetry", 1, false, fmt.Sprintf(`{"n":%d}`, n))}
			}
		}()
		go func() {
			defer wg.Done()
			for p := range toks {
				if p.tok.WaitTimeout(10*time.Second) && p.tok.Error() == nil {
					mu.Lock()
					acked[device] = append(acked[device], p.n)
					mu.Unlock()
					total.Add(1)
				}
			}
		}()
	}
	checkFor(t, 60*time.Second, func() error {
		if n := total.Load(); n < 3000 {
			return fmt.Errorf("only %d acknowledged", n)
		}
		return nil
	})
	if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-h.exited
	wg.Wait()

	db := store.NewDB(dbPath) // recovers the WAL like the next start would
	if err := db.Open(); err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.IntegrityCheck(context.Background()); err != nil {
		t.Fatal(err)
	}
	stored, err := storedN(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	nRows, missing := 0, 0
	for _, c := range stored {
		nRows += c
	}
	for device, ns := range acked {
		for _, n := range ns {
			if stored[deviceN{device, n}] == 0 {
				missing++
			}
		}
	}
	t.Logf("acknowledged %d, rows on disk %d, acknowledged but missing %d", total.Load(), nRows, missing)
	if missing > 0 {
		t.Fatalf("%d acknowledged messages missing after SIGKILL", missing)
	}
}

// deviceN names one test message: its device and the "n" in its payload.
type deviceN struct {
	device string
	n      int
}

// storedN counts the stored rows of each test message, read with plain
// database/sql from the file at path.
func storedN(path string) (map[deviceN]int, error) {
	raw, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	rows, err := raw.Query(`SELECT d.name, m.payload FROM messages m JOIN devices d ON d.id = m.device_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[deviceN]int{}
	for rows.Next() {
		var name string
		var payload []byte
		if err := rows.Scan(&name, &payload); err != nil {
			return nil, err
		}
		var p struct{ N int }
		json.Unmarshal(payload, &p)
		out[deviceN{name, p.N}]++
	}
	return out, rows.Err()
}
