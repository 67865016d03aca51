// Command minhub is the yardstick of BenchmarkFleet, not part of the
// product: the least a durable MQTT hub must do. A mochi hook blocks each
// QoS 1 publish until its row is committed, in group commits of up to 2,000
// rows, into one table with one index; nothing else (no decoding, no
// summaries, no rollups, no live feed). Built only by the benchmark.
//
//	minhub -mqtt 127.0.0.1:0 -db /tmp/min.db
//
// It prints "ready ADDR" once it listens.
package main

import (
	"database/sql"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	_ "modernc.org/sqlite"
)

type row struct {
	topic   string
	payload []byte
	done    chan error
}

type hook struct {
	mqtt.HookBase
	q chan row
}

func (h *hook) ID() string           { return "minhub" }
func (h *hook) Provides(b byte) bool { return b == mqtt.OnPublish }
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || !strings.HasPrefix(pk.TopicName, "devices/") {
		return pk, nil
	}
	r := row{topic: pk.TopicName, payload: pk.Payload, done: make(chan error, 1)}
	h.q <- r
	if pk.FixedHeader.Qos > 0 {
		if err := <-r.done; err != nil {
			return pk, packets.ErrRejectPacket
		}
	}
	return pk, nil
}

func main() {
	addr := flag.String("mqtt", "127.0.0.1:0", "listen address")
	path := flag.String("db", "minhub.db", "database file")
	flag.Parse()
	db, err := sql.Open("sqlite", "file:"+*path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(5000)")
	if err != nil {
		fail(err)
	}
	db.SetMaxOpenConns(1)
	for _, q := range []string{
		`CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, device TEXT NOT NULL, ts INTEGER NOT NULL, payload BLOB NOT NULL)`,
		`CREATE INDEX IF NOT EXISTS messages_device_ts ON messages (device, ts)`,
	} {
		if _, err := db.Exec(q); err != nil {
			fail(err)
		}
	}
	h := &hook{q: make(chan row, 16384)}
	go commit(db, h.q)

	s := mqtt.New(&mqtt.Options{InlineClient: false, Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))})
	s.AddHook(new(auth.AllowHook), nil)
	s.AddHook(h, nil)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fail(err)
	}
	s.AddListener(listeners.NewNet("min", ln))
	if err := s.Serve(); err != nil {
		fail(err)
	}
	fmt.Println("ready", ln.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	s.Close()
}

// commit writes whatever is queued, up to 2,000 rows, in one transaction,
// then releases those publishes, and again.
func commit(db *sql.DB, q chan row) {
	var batch []row
	for first := range q {
		batch = append(batch[:0], first)
	more:
		for len(batch) < 2000 {
			select {
			case r := <-q:
				batch = append(batch, r)
			default:
				break more
			}
		}
		err := write(db, batch)
		for _, r := range batch {
			r.done <- err
		}
	}
}

func write(db *sql.DB, batch []row) error {
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	stmt, err := tx.Prepare(`INSERT INTO messages (device, ts, payload) VALUES (?, strftime('%s','now') * 1000, ?)`)
	if err != nil {
		return err
	}
	for _, r := range batch {
		device := strings.TrimPrefix(r.topic, "devices/")
		if i := strings.IndexByte(device, '/'); i >= 0 {
			device = device[:i]
		}
		if _, err := stmt.Exec(device, r.payload); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "minhub:", err)
	os.Exit(1)
}
