package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/fasthttp/websocket"

	"github.com/telehub/telehub/store/storetest"
)

// benchDevices is the fleet size of the end-to-end benchmarks; override with
// TELEHUB_BENCH_DEVICES.
func benchDevices() int {
	if n, err := strconv.Atoi(os.Getenv("TELEHUB_BENCH_DEVICES")); err == nil && n > 0 {
		return n
	}
	return 1000
}

// fleet connects n devices (one paho client each) to the hub's embedded broker.
func fleet(b *testing.B, m *Main, n int) []paho.Client {
	b.Helper()
	clients := make([]paho.Client, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50) // connect 50 at a time
	for i := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c := paho.NewClient(paho.NewClientOptions().AddBroker(m.Broker.URL()).SetClientID(fmt.Sprint("bench-", i)).
				SetAutoReconnect(false).SetWriteTimeout(30 * time.Second))
			if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				b.Errorf("connect %d: %v", i, tok.Error())
				return
			}
			clients[i] = c
		}()
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	b.Cleanup(func() {
		for _, c := range clients {
			c.Disconnect(0)
		}
	})
	return clients
}

func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[min(len(sorted)-1, int(p*float64(len(sorted))))].Microseconds()) / 1000
}

// sample is one message's timeline as the publisher saw it.
type sample struct {
	device, n int
	sent      time.Time
	acked     time.Time
}

// drive makes every client publish per QoS 1 messages for its own device,
// with up to 10 in flight, one every interval (0: as fast as acks allow). It
// returns every message's send and PUBACK times and the elapsed time.
// PUBACKs come back in order per connection, so one waiter per device,
// taking tokens in order, times each accurately.
func drive(b *testing.B, clients []paho.Client, per int, interval time.Duration) ([]sample, time.Duration) {
	b.Helper()
	lat := make([][]sample, len(clients))
	start := time.Now()
	var wg sync.WaitGroup
	for d, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := fmt.Sprintf("devices/dev-%d/telemetry", d)
			type inflight struct {
				tok paho.Token
				n   int
				at  time.Time
			}
			window := make(chan inflight, 10)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for f := range window {
					select {
					case <-f.tok.Done():
					case <-time.After(60 * time.Second):
						b.Errorf("device %d: no PUBACK in 60s", d)
						return
					}
					if f.tok.Error() != nil {
						b.Errorf("publish: %v", f.tok.Error())
						return
					}
					lat[d] = append(lat[d], sample{d, f.n, f.at, time.Now()})
				}
			}()
			var tick *time.Ticker
			if interval > 0 {
				// Spread the devices evenly over one interval.
				time.Sleep(interval * time.Duration(d) / time.Duration(len(clients)))
				tick = time.NewTicker(interval)
				defer tick.Stop()
			}
			for i := 0; i < per; i++ {
				if tick != nil && i > 0 {
					<-tick.C
				}
				at := time.Now()
				window <- inflight{c.Publish(topic, 1, false, fmt.Sprintf(`{"n":%d,"temp":21.5,"hum":40}`, i)), i, at}
			}
			close(window)
			<-done
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []sample
	for _, l := range lat {
		all = append(all, l...)
	}
	return all, elapsed
}

// latencies returns f of every sample, sorted.
func latencies(samples []sample, f func(sample) time.Duration) []time.Duration {
	out := make([]time.Duration, len(samples))
	for i, s := range samples {
		out[i] = f(s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func ackLatency(s sample) time.Duration { return s.acked.Sub(s.sent) }

// BenchmarkIngest floods the hub: 1,000 devices, each with its own
// connection and up to 10 QoS 1 messages in flight, publish b.N messages in
// total. A PUBACK means the row is committed, so msgs/s is the persisted
// rate. The raw SQLite insert rate (same schema, durability and rows per
// commit, no broker) is measured in the same run and reported beside it.
//
//	go test -run '^$' -bench 'Ingest$' -benchtime 200000x ./cmd/telehub
func BenchmarkIngest(b *testing.B) {
	m := MustRunMain(b)
	clients := fleet(b, m, benchDevices())
	per := (b.N + len(clients) - 1) / len(clients)
	commits0 := m.Store.Commits()
	b.ResetTimer()
	samples, elapsed := drive(b, clients, per, 0)
	b.StopTimer()
	lat := latencies(samples, ackLatency)
	total := per * len(clients)
	rowsPerCommit := float64(total) / float64(max(m.Store.Commits()-commits0, 1))
	rate := float64(total) / elapsed.Seconds()
	raw := storetest.RawInsertRate(b, max(total, 50000), max(int(rowsPerCommit), 1))
	b.ReportMetric(rate, "msgs/s")
	b.ReportMetric(raw, "raw-rows/s")
	b.ReportMetric(rate/raw, "ratio")
	b.ReportMetric(rowsPerCommit, "rows/commit")
	b.ReportMetric(percentile(lat, 0.50), "p50-ms")
	b.ReportMetric(percentile(lat, 0.99), "p99-ms")
}

// BenchmarkIngestLatency publishes at a fixed total rate of 10,000 msg/s
// (10 msg/s from each of 1,000 devices; TELEHUB_BENCH_DEVICES changes the
// fleet, not the total), QoS 1, b.N messages in total, and reports
// publish-to-PUBACK latency, which includes the commit.
//
//	go test -run '^$' -bench IngestLatency -benchtime 100000x ./cmd/telehub
func BenchmarkIngestLatency(b *testing.B) {
	m := MustRunMain(b)
	clients := fleet(b, m, benchDevices())
	per := (b.N + len(clients) - 1) / len(clients)
	b.ResetTimer()
	const totalRate = 10000 // msg/s
	samples, elapsed := drive(b, clients, per, time.Second*time.Duration(len(clients))/totalRate)
	b.StopTimer()
	lat := latencies(samples, ackLatency)
	b.ReportMetric(float64(per*len(clients))/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(percentile(lat, 0.50), "p50-ms")
	b.ReportMetric(percentile(lat, 0.99), "p99-ms")
	b.ReportMetric(percentile(lat, 0.999), "p99.9-ms")

	// Split each message's latency at the moment the hub's hook took it
	// (messages.received, ms): into the hub (client, TCP, broker read) and
	// through the hub (queue, commit, PUBACK written and read).
	received := map[[2]int]int64{}
	rows, err := m.SQLite.DB.ReadDB().Query(`SELECT d.name, m.payload, m.received FROM messages m JOIN devices d ON d.id = m.device_id`)
	if err != nil {
		b.Fatal(err)
	}
	for rows.Next() {
		var name string
		var payload []byte
		var recv int64
		rows.Scan(&name, &payload, &recv)
		var p struct{ N int }
		json.Unmarshal(payload, &p)
		var d int
		fmt.Sscanf(name, "dev-%d", &d)
		received[[2]int{d, p.N}] = recv
	}
	rows.Close()
	at := func(s sample) time.Time { return time.UnixMilli(received[[2]int{s.device, s.n}]) }
	in := latencies(samples, func(s sample) time.Duration { return at(s).Sub(s.sent) })
	through := latencies(samples, func(s sample) time.Duration { return s.acked.Sub(at(s)) })
	var rolled int64
	m.SQLite.DB.ReadDB().QueryRow(`SELECT value FROM meta WHERE key = 'rollup_seq'`).Scan(&rolled)
	b.ReportMetric(float64(int64(m.Store.LastSeq())-rolled), "rollup-lag-msgs")
	b.ReportMetric(percentile(in, 0.99), "in-p99-ms")
	b.ReportMetric(percentile(through, 0.50), "through-p50-ms")
	b.ReportMetric(percentile(through, 0.99), "through-p99-ms")
}

// BenchmarkIngestWithDashboards measures what WebSocket clients cost
// ingestion: 1,000 devices publish a third of b.N messages as fast as they
// can with no dashboard connected, a third with 1,000 dashboards connected
// (each following one device, as the device view does) and 10 clients that
// stream every device and never read, and a third alone again. The ratio
// compares the middle third with the mean of the other two, so that the
// table growing during the run does not count against the dashboards. It
// also reports how many of the stalled clients were disconnected. The
// dashboards read in this process, so their CPU is counted against the hub.
//
//	go test -run '^$' -bench IngestWithDashboards -benchtime 200000x ./cmd/telehub
func BenchmarkIngestWithDashboards(b *testing.B) {
	m := MustRunMain(b, func(c *Config) { c.WSWriteTimeout = 2 * time.Second; c.WSMaxClients = 2000 })
	clients := fleet(b, m, benchDevices())
	per := max((b.N/3+len(clients)-1)/len(clients), 1)
	total := float64(per * len(clients))

	b.ResetTimer()
	_, before := drive(b, clients, per, 0)
	b.StopTimer()

	ws := "ws" + strings.TrimPrefix(m.HTTP.URL(), "http") + "/api/v1/ws?batch=1"
	var readers sync.WaitGroup
	var frames atomic.Int64
	var conns []*websocket.Conn
	for i := 0; i < 1000; i++ {
		c, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("%s&device=dev-%d", ws, i%len(clients)), nil)
		if err != nil {
			b.Fatalf("dashboard %d: %v", i, err)
		}
		conns = append(conns, c)
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
				frames.Add(1)
			}
		}()
	}
	var stalled []*websocket.Conn
	for i := 0; i < 10; i++ {
		c, _, err := websocket.DefaultDialer.Dial(ws, nil)
		if err != nil {
			b.Fatalf("stalled client %d: %v", i, err)
		}
		stalled = append(stalled, c) // never read
	}
	b.StartTimer()
	_, with := drive(b, clients, per, 0)
	b.StopTimer()
	// Stalled clients are cut off within --ws-write-timeout or after
	// falling behind repeatedly.
	deadline := time.Now().Add(10 * time.Second)
	for m.HTTP.WSClients() > 1000 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	_, slow := m.HTTP.WSDrops()
	for _, c := range append(conns, stalled...) {
		c.Close()
	}
	readers.Wait()
	for deadline := time.Now().Add(10 * time.Second); m.HTTP.WSClients() > 0 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	b.StartTimer()
	_, after := drive(b, clients, per, 0)
	b.StopTimer()
	alone := (before + after) / 2
	b.ReportMetric(total/before.Seconds(), "msgs/s-before")
	b.ReportMetric(total/after.Seconds(), "msgs/s-after")
	b.ReportMetric(total/with.Seconds(), "msgs/s-dashboards")
	b.ReportMetric(alone.Seconds()/with.Seconds(), "ratio")
	b.ReportMetric(float64(slow), "slow-disconnected")
	b.ReportMetric(float64(frames.Load()), "dashboard-frames")
}
