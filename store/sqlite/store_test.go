package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store/sqlite"
	"github.com/telehub/telehub/store/storetest"
)

var (
	MustOpenDB     = storetest.MustOpenDB
	MustOpenDBPath = storetest.MustOpenDBPath
	MustOpenWriter = storetest.MustOpenWriter
	rawDB          = storetest.RawDB
)

func msg(device string, n int) devices.Message {
	payload := fmt.Appendf(nil, `{"n":%d,"temp":%d.5}`, n, 20+n%5)
	ts, values, flags := devices.DecodePayload(payload, 1700000000000+int64(n))
	return devices.Message{
		Device: device, Topic: "devices/" + device + "/telemetry", Kind: devices.KindTelemetry,
		TS: ts, Received: 1700000000000 + int64(n), QoS: 1, Flags: flags, Payload: payload, Values: values,
	}
}

// writeAll writes msgs through w and waits until each is committed; it
// returns the messages in Done order.
var writeAll = storetest.WriteAll

func waitTimeout(tb testing.TB, wg *sync.WaitGroup, d time.Duration) {
	tb.Helper()
	c := make(chan struct{})
	go func() { wg.Wait(); close(c) }()
	select {
	case <-c:
	case <-time.After(d):
		tb.Fatalf("timed out after %v", d)
	}
}

func TestWriter_Write(t *testing.T) {
	t.Run("OK", func(t *testing.T) {
		db := MustOpenDB(t)
		var committed []devices.Message
		var mu sync.Mutex
		w := sqlite.NewWriter(db)
		w.OnCommit = func(b []devices.Message) {
			mu.Lock()
			committed = append(committed, b...)
			mu.Unlock()
		}
		if err := w.Open(); err != nil {
			t.Fatal(err)
		}
		defer w.Close(context.Background())

		var in []devices.Message
		for i := 0; i < 500; i++ {
			in = append(in, msg(fmt.Sprintf("dev-%d", i%7), i))
		}
		done := writeAll(t, w, in)
		for i, m := range done {
			if m.Seq != devices.Seq(i+1) {
				t.Fatalf("Done #%d has Seq=%d, want %d (in order, from 1)", i, m.Seq, i+1)
			}
			if string(m.Payload) != string(in[i].Payload) {
				t.Fatalf("Done #%d payload=%s, want %s", i, m.Payload, in[i].Payload)
			}
		}
		if w.LastSeq() != 500 {
			t.Fatalf("LastSeq=%d, want 500", w.LastSeq())
		}
		// OnCommit runs after the batch's Done callbacks: wait for the last.
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			n := len(committed)
			mu.Unlock()
			if n == 500 {
				break
			}
			if n > 500 || time.Now().After(deadline) {
				t.Fatalf("OnCommit saw %d, want 500", n)
			}
			time.Sleep(time.Millisecond)
		}

		raw := rawDB(t, db.Path)
		var n, maxSeq int
		raw.QueryRow(`SELECT count(*), max(seq) FROM messages`).Scan(&n, &maxSeq)
		if n != 500 || maxSeq != 500 {
			t.Fatalf("rows=%d max(seq)=%d, want 500 500", n, maxSeq)
		}
		// The summary is current in memory at once, and saved by Close.
		if d, err := w.Device("dev-3"); err != nil || d.MessageCount != 71 || d.LastSeq != 494 {
			t.Fatalf("Device=%+v, %v; want 71 messages, last seq 494", d, err)
		}
		if err := w.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		var count, lastSeq int
		var latest string
		raw.QueryRow(`SELECT message_count, last_seq, latest FROM devices WHERE name = 'dev-3'`).Scan(&count, &lastSeq, &latest)
		// dev-3 got n = 3, 10, ..., 493: 71 messages, the last being seq 494.
		if count != 71 || lastSeq != 494 {
			t.Fatalf("dev-3 count=%d last_seq=%d, want 71 494", count, lastSeq)
		}
		if latest != `{"n":{"v":493,"ts":1700000000493,"seq":494},"temp":{"v":23.5,"ts":1700000000493,"seq":494}}` {
			t.Fatalf("latest=%s", latest)
		}
	})

	t.Run("SeqSurvivesRestartAndDeletes", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "t.db")
		db := MustOpenDBPath(t, path)
		w := MustOpenWriter(t, db)
		writeAll(t, w, []devices.Message{msg("a", 1), msg("a", 2), msg("b", 3)})
		w.Close(context.Background())
		// Delete the newest rows: their numbers must never be handed out again.
		if _, err := rawDB(t, path).Exec(`DELETE FROM messages WHERE seq >= 2`); err != nil {
			t.Fatal(err)
		}
		db.Close()

		db2 := MustOpenDBPath(t, path)
		w2 := MustOpenWriter(t, db2)
		if got := w2.LastSeq(); got != 3 {
			t.Fatalf("LastSeq after restart=%d, want 3", got)
		}
		done := writeAll(t, w2, []devices.Message{msg("a", 4)})
		if done[0].Seq != 4 {
			t.Fatalf("Seq=%d, want 4", done[0].Seq)
		}
		d, err := w2.Device("a")
		if err != nil || d.MessageCount != 3 {
			t.Fatalf("FindDevice=%+v, %v; want 3 messages counted", d, err)
		}
	})

	t.Run("CloseDrains", func(t *testing.T) {
		db := MustOpenDB(t)
		w := sqlite.NewWriter(db)
		if err := w.Open(); err != nil {
			t.Fatal(err)
		}
		var acked sync.WaitGroup
		for i := 0; i < 2000; i++ {
			acked.Add(1)
			p := &devices.Pending{Message: msg("d", i), Done: func(_ *devices.Message, err error) {
				if err != nil {
					t.Errorf("Done err=%v", err)
				}
				acked.Done()
			}}
			if err := w.Write(context.Background(), p); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		waitTimeout(t, &acked, time.Second) // every Done ran before Close returned
		var n int
		rawDB(t, db.Path).QueryRow(`SELECT count(*) FROM messages`).Scan(&n)
		if n != 2000 {
			t.Fatalf("rows=%d, want 2000", n)
		}
		if err := w.Write(context.Background(), &devices.Pending{Message: msg("d", 1)}); err != devices.ErrClosed {
			t.Fatalf("Write after Close err=%v, want ErrClosed", err)
		}
	})

	t.Run("TryWriteQueueFull", func(t *testing.T) {
		db := MustOpenDB(t)
		w := sqlite.NewWriter(db)
		w.QueueSize = 1
		block := make(chan struct{})
		w.OnCommit = func([]devices.Message) { <-block } // stall the pipeline
		if err := w.Open(); err != nil {
			t.Fatal(err)
		}
		defer func() { close(block); w.Close(context.Background()) }()
		full := false
		for i := 0; i < 100 && !full; i++ {
			err := w.TryWrite(&devices.Pending{Message: msg("d", i)})
			full = err == devices.ErrQueueFull
		}
		if !full {
			t.Fatal("TryWrite never reported ErrQueueFull with a stalled pipeline")
		}
	})
}

// TestWriter_FoldAfterCrash: device summaries saved late, partly, or not at
// all (a crash between flush rounds) are rebuilt exactly from the messages.
func TestWriter_FoldAfterCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.db")
	db := MustOpenDBPath(t, path)
	w := MustOpenWriter(t, db)
	var in []devices.Message
	for i := 0; i < 300; i++ {
		in = append(in, msg(fmt.Sprintf("d%d", i%3), i))
	}
	status := msg("d0", 300)
	status.Kind, status.Topic, status.Payload, status.Values = devices.KindStatus, "devices/d0/status", []byte("offline"), nil
	writeAll(t, w, append(in, status))
	want, _ := w.Device("d0")
	w.Close(context.Background())
	db.Close()

	raw := rawDB(t, path)
	// As if the hub died after d1's summary was saved at seq 150 and before
	// the round finished: d0 saved nothing, d2 is half way.
	for _, q := range []string{
		`UPDATE meta SET value = 0 WHERE key = 'summary_seq'`,
		`UPDATE devices SET message_count = 0, last_seq = 0, status = '', latest = '{}' WHERE name = 'd0'`,
		`UPDATE devices SET message_count = 50, last_seq = 150, latest = '{}' WHERE name = 'd2'`,
	} {
		if _, err := raw.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	db2 := MustOpenDBPath(t, path)
	w2 := MustOpenWriter(t, db2)
	for name, count := range map[string]int64{"d0": 101, "d1": 100, "d2": 100} {
		d, err := w2.Device(name)
		if err != nil || d.MessageCount != count {
			t.Fatalf("%s: %+v, %v; want %d messages", name, d, err, count)
		}
	}
	got, _ := w2.Device("d0")
	if got.Status != "offline" || got.LastSeq != want.LastSeq || string(got.Latest["n"].Value) != string(want.Latest["n"].Value) {
		t.Fatalf("d0 after fold=%+v, want %+v", got, want)
	}
}

// TestWriter_OnePerDatabase: a second hub on the same file once started
// silently, then retried "UNIQUE constraint failed: messages.seq" forever
// while its devices got no PUBACK. The second Writer is refused, naming the
// file and the process that holds it.
func TestWriter_OnePerDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "telehub.db")
	db1 := MustOpenDBPath(t, path)
	MustOpenWriter(t, db1)
	db2 := MustOpenDBPath(t, path)
	w2 := sqlite.NewWriter(db2)
	err := w2.Open()
	if err == nil {
		w2.Close(context.Background())
		t.Fatal("a second Writer opened the same database")
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), fmt.Sprint("process ", os.Getpid())) {
		t.Fatalf("error %q, want it to name %s and process %d", err, path, os.Getpid())
	}
}
