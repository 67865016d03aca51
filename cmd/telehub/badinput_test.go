package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telehub/telehub/devices"
)

// TestBadInput: malformed, oversized and odd publishes never crash the hub
// or stall other devices; what can be stored is stored and flagged, what
// cannot is refused and counted by reason, and the counters match.
func TestBadInput(t *testing.T) {
	m := MustRunMain(t, func(c *Config) { c.MaxPayload = 4096 })
	const repeat = 10
	cases := []struct {
		name    string
		topic   string
		payload []byte
		stored  bool           // a row is written
		flag    devices.Flags  // the row's flags
		reason  devices.Reason // refusal counter, when not stored
		counted bool           // counted as received (a device topic)
	}{
		{"truncated json", "devices/bad/telemetry", []byte(`{"temp":`), true, devices.FlagNotJSON, "", true},
		{"binary", "devices/bad/telemetry", []byte{0, 0xff, 0xfe, 7}, true, devices.FlagNotJSON, "", true},
		{"empty", "devices/bad/telemetry", nil, true, devices.FlagEmpty, "", true},
		{"array", "devices/bad/telemetry", []byte(`[1,2,3]`), true, devices.FlagNotObject, "", true},
		{"bad ts", "devices/bad/telemetry", []byte(`{"temp":1,"ts":"soon"}`), true, devices.FlagBadTS, "", true},
		{"deep nesting", "devices/bad/telemetry", []byte(strings.Repeat("[", 1500) + strings.Repeat("]", 1500)), true, devices.FlagNotObject, "", true},
		{"oversized", "devices/bad/telemetry", bytes.Repeat([]byte("x"), 4097), false, 0, devices.ReasonTooLarge, true},
		{"invalid device id", "devices/bad id/telemetry", []byte(`{}`), false, 0, devices.ReasonInvalidTopic, true},
		{"empty device id", "devices//telemetry", []byte(`{}`), false, 0, devices.ReasonInvalidTopic, true},
		{"extra level", "devices/bad/telemetry/x", []byte(`{}`), false, 0, "", false},
		{"other topic", "home/kitchen/lights", []byte(`on`), false, 0, "", false},
	}

	good := mqttConnect(t, m.Broker.URL(), "good")
	var wg sync.WaitGroup
	wg.Add(1)
	goodAcked := 0
	go func() {
		defer wg.Done()
		goodAcked = publishN(t, good, "good", 2000)
	}()
	bad := mqttConnect(t, m.Broker.URL(), "bad")
	for r := 0; r < repeat; r++ {
		for _, tc := range cases {
			for _, qos := range []byte{0, 1} {
				tok := bad.Publish(tc.topic, qos, false, tc.payload)
				if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					t.Fatalf("%s qos %d: %v", tc.name, qos, tok.Error())
				}
			}
		}
	}
	wg.Wait()
	if goodAcked != 2000 {
		t.Fatalf("good device: %d of 2000 acknowledged", goodAcked)
	}

	var wantStored, wantReceived int64
	wantFlagged := map[devices.Flags]int{}
	wantRejected := map[devices.Reason]int64{}
	for _, tc := range cases {
		n := int64(2 * repeat) // QoS 0 and 1
		if tc.counted {
			wantReceived += n
		}
		if tc.stored {
			wantStored += n
			wantFlagged[tc.flag] += int(n)
		} else if tc.reason != "" {
			wantRejected[tc.reason] += n
		}
	}
	checkFor(t, 10*time.Second, func() error {
		if got := m.Stats.Snapshot().Stored; got != 2000+wantStored {
			return fmt.Errorf("stored=%d, want %d", got, 2000+wantStored)
		}
		return nil
	})
	s := m.Stats.Snapshot()
	if s.Received != 2000+wantReceived {
		t.Errorf("received=%d, want %d", s.Received, 2000+wantReceived)
	}
	for r, n := range wantRejected {
		if s.Rejected[r] != n {
			t.Errorf("rejected[%s]=%d, want %d", r, s.Rejected[r], n)
		}
	}
	rows, err := m.SQLite.DB.ReadDB().Query(`SELECT m.flags, count(*) FROM messages m JOIN devices d ON d.id = m.device_id WHERE d.name = 'bad' GROUP BY m.flags`)
	if err != nil {
		t.Fatal(err)
	}
	gotFlagged := map[devices.Flags]int{}
	for rows.Next() {
		var f devices.Flags
		var n int
		rows.Scan(&f, &n)
		gotFlagged[f] = n
	}
	rows.Close()
	for f, n := range wantFlagged {
		if gotFlagged[f] != n {
			t.Errorf("rows with flags %v=%d, want %d", f.Names(), gotFlagged[f], n)
		}
	}

	// The same numbers on /metrics.
	resp, err := http.Get(m.HTTP.URL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range []string{
		fmt.Sprintf(`telehub_messages_rejected_total{reason="payload_too_large"} %d`, wantRejected[devices.ReasonTooLarge]),
		fmt.Sprintf(`telehub_messages_rejected_total{reason="invalid_topic"} %d`, wantRejected[devices.ReasonInvalidTopic]),
		fmt.Sprintf(`telehub_messages_stored_total %d`, 2000+wantStored),
		fmt.Sprintf(`telehub_commit_rows_sum %d`, 2000+wantStored),
	} {
		if !strings.Contains(string(body), line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	for _, name := range []string{"telehub_ready 1", "telehub_database_bytes ", "telehub_devices_connected ", "telehub_devices ",
		"telehub_websocket_resyncs_total ", "telehub_websocket_slow_disconnects_total ", `telehub_refused_total{reason="mqtt_bad_credentials"} `, "telehub_ingest_queue_length "} {
		if !strings.Contains(string(body), "\n"+name) {
			t.Errorf("/metrics lacks %q", name)
		}
	}
}
