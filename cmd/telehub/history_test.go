package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// TestHistory_Pagination: following "next" pages through every message of a
// device exactly once, in order, in both orders; the Link header carries
// the same URL; cursors that were not issued, or for the other order, are
// refused with 400.
func TestHistory_Pagination(t *testing.T) {
	m := MustRunMain(t)
	c := mqttConnect(t, m.Broker.URL(), "pager")
	if n := publishN(t, c, "pager-1", 1000); n != 1000 {
		t.Fatalf("acked %d", n)
	}
	publishN(t, c, "pager-2", 10)
	publishN(t, c, "other", 10)

	type page struct {
		Messages []struct {
			Seq int64 `json:"seq"`
			TS  int64 `json:"ts"`
		} `json:"messages"`
		More bool   `json:"more"`
		Next string `json:"next"`
	}
	for _, order := range []string{"desc", "asc"} {
		url := m.HTTP.URL() + "/api/v1/devices/pager-1/messages?limit=300&order=" + order
		var seqs []int64
		pages := 0
		for url != "" {
			resp, err := http.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			var p page
			json.NewDecoder(resp.Body).Decode(&p)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("GET %s: %d", url, resp.StatusCode)
			}
			pages++
			for _, m := range p.Messages {
				seqs = append(seqs, m.Seq)
			}
			if link := resp.Header.Get("Link"); p.More != (link != "") || (p.More && link != "<"+p.Next+`>; rel="next"`) {
				t.Fatalf("more=%v next=%q Link=%q", p.More, p.Next, link)
			}
			url = ""
			if p.More {
				url = m.HTTP.URL() + p.Next
			}
		}
		if len(seqs) != 1000 || pages != 4 {
			t.Fatalf("order %s: %d messages in %d pages, want 1000 in 4", order, len(seqs), pages)
		}
		for i := 1; i < len(seqs); i++ {
			if (order == "desc") != (seqs[i] < seqs[i-1]) {
				t.Fatalf("order %s: seq %d after %d", order, seqs[i], seqs[i-1])
			}
		}
	}

	// A cursor for the other order, and one this API never issued.
	resp, _ := http.Get(m.HTTP.URL() + "/api/v1/devices/pager-1/messages?limit=10")
	var p page
	json.NewDecoder(resp.Body).Decode(&p)
	resp.Body.Close()
	cur := p.Next[strings.Index(p.Next, "cursor=")+len("cursor="):]
	for _, q := range []string{"order=asc&cursor=" + cur, "cursor=garbage!", "cursor=eyJ4IjoxfQ"} {
		resp, err := http.Get(m.HTTP.URL() + "/api/v1/devices/pager-1/messages?" + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Fatalf("%s: status %d, want 400", q, resp.StatusCode)
		}
	}

	// Devices by prefix, a page at a time.
	var devs struct {
		Devices []struct{ ID string } `json:"devices"`
		More    bool                  `json:"more"`
		Next    string                `json:"next"`
	}
	getJSON(t, m.HTTP.URL()+"/api/v1/devices?prefix=pager-&limit=1", &devs)
	if len(devs.Devices) != 1 || devs.Devices[0].ID != "pager-1" || !devs.More {
		t.Fatalf("first page %+v", devs)
	}
	getJSON(t, m.HTTP.URL()+devs.Next, &devs)
	if len(devs.Devices) != 1 || devs.Devices[0].ID != "pager-2" || devs.More {
		t.Fatalf("second page %+v", devs)
	}

	// Latest values and metric names.
	var latest struct {
		Latest map[string]struct {
			V json.RawMessage `json:"v"`
		} `json:"latest"`
	}
	getJSON(t, m.HTTP.URL()+"/api/v1/devices/pager-1/latest", &latest)
	if string(latest.Latest["n"].V) != "999" {
		t.Fatalf("latest n=%s, want 999", latest.Latest["n"].V)
	}
	var keys struct{ Keys []string }
	getJSON(t, m.HTTP.URL()+"/api/v1/devices/pager-1/keys", &keys)
	if fmt.Sprint(keys.Keys) != "[n temp]" {
		t.Fatalf("keys=%v, want [n temp]", keys.Keys)
	}
	getJSON(t, m.HTTP.URL()+"/api/v1/metrics/keys", &keys)
	if fmt.Sprint(keys.Keys) != "[n temp]" {
		t.Fatalf("all keys=%v, want [n temp]", keys.Keys)
	}
}

// TestHistory_Export: CSV and NDJSON exports stream every matching message
// as a download, with metric columns on request.
func TestHistory_Export(t *testing.T) {
	m := MustRunMain(t)
	c := mqttConnect(t, m.Broker.URL(), "exporter")
	publishN(t, c, "exp-1", 2500) // more than one export page
	publishN(t, c, "exp-2", 10)
	get := func(q string) (*http.Response, string) {
		resp, err := http.Get(m.HTTP.URL() + "/api/v1/export?" + q)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		io.Copy(&b, resp.Body)
		return resp, b.String()
	}
	resp, body := get("format=csv&device=exp-1")
	lines := strings.Split(strings.TrimSpace(body), "\n")
	if resp.StatusCode != 200 || len(lines) != 2501 || lines[0] != "seq,device,ts,received,topic,encoding,payload" {
		t.Fatalf("csv: status %d, %d lines, header %q", resp.StatusCode, len(lines), lines[0])
	}
	if cd := resp.Header.Get("Content-Disposition"); cd != `attachment; filename="telehub-exp-1.csv"` {
		t.Fatalf("Content-Disposition %q", cd)
	}
	_, body = get("format=csv&device=exp-1&metrics=n,temp&from=0")
	lines = strings.Split(strings.TrimSpace(body), "\n")
	if lines[0] != "seq,device,ts,received,n,temp" || !strings.HasSuffix(lines[1], ",0,0.5") || !strings.HasSuffix(lines[2500], ",2499,19.5") {
		t.Fatalf("csv with metrics: %q ... %q", lines[1], lines[len(lines)-1])
	}
	resp, body = get("format=ndjson")
	lines = strings.Split(strings.TrimSpace(body), "\n")
	if resp.Header.Get("Content-Type") != "application/x-ndjson" || len(lines) != 2510 {
		t.Fatalf("ndjson all devices: %d lines, type %q", len(lines), resp.Header.Get("Content-Type"))
	}
	for _, l := range lines {
		if !json.Valid([]byte(l)) {
			t.Fatalf("invalid line %q", l)
		}
	}
	for q, status := range map[string]int{"format=xml": 400, "device=nosuch": 404, "from=9&to=1": 400, "device=bad%20id": 400} {
		if resp, _ := get(q); resp.StatusCode != status {
			t.Errorf("%s: status %d, want %d", q, resp.StatusCode, status)
		}
	}
}

// TestHistory_SeriesMaxPoints: with max_points the hub picks an interval so
// that no series has more points than asked for.
func TestHistory_SeriesMaxPoints(t *testing.T) {
	m := MustRunMain(t)
	c := mqttConnect(t, m.Broker.URL(), "series")
	now := time.Now().UnixMilli()
	toks := make([]paho.Token, 0, 500)
	for i := 0; i < 500; i++ { // one reading every 10 s over the last ~83 minutes
		toks = append(toks, c.Publish("devices/ser/telemetry", 1, false, fmt.Sprintf(`{"temp":%d,"ts":%d}`, i, now-int64(500-i)*10_000)))
	}
	for _, tok := range toks {
		tok.Wait()
	}
	for _, maxPoints := range []int{1, 7, 100, 1000} {
		var s struct {
			IntervalMS int64                   `json:"interval_ms"`
			Points     map[string][][2]float64 `json:"points"`
			Truncated  bool                    `json:"truncated"`
			Scanned    int                     `json:"scanned"`
		}
		url := fmt.Sprintf("%s/api/v1/devices/ser/series?metrics=temp&agg=count&from=%d&to=%d&max_points=%d", m.HTTP.URL(), now-5_000_000, now, maxPoints)
		if code := getJSON(t, url, &s); code != 200 {
			t.Fatalf("status %d", code)
		}
		pts := s.Points["temp"]
		total := 0.0
		for _, p := range pts {
			total += p[1]
		}
		if len(pts) == 0 || len(pts) > maxPoints || s.Truncated || total != 500 || s.Scanned != 500 {
			t.Fatalf("max_points=%d: %d points (interval %d ms, truncated %v) counting %v of 500 readings", maxPoints, len(pts), s.IntervalMS, s.Truncated, total)
		}
	}
	// counts=1 adds how many readings each point averages, and seq names
	// the last message included: everything published so far.
	for _, maxPoints := range []int{7, 1000} {
		var s struct {
			Points map[string][][3]float64 `json:"points"`
			Seq    int64                   `json:"seq"`
		}
		url := fmt.Sprintf("%s/api/v1/devices/ser/series?metrics=temp&counts=1&from=%d&to=%d&max_points=%d", m.HTTP.URL(), now-5_000_000, now, maxPoints)
		if code := getJSON(t, url, &s); code != 200 {
			t.Fatalf("status %d", code)
		}
		var readings, sum float64
		for _, p := range s.Points["temp"] {
			readings += p[2]
			sum += p[1] * p[2]
		}
		if readings != 500 || sum != 499*500/2 || s.Seq != int64(m.Store.LastSeq()) {
			t.Fatalf("max_points=%d: %v readings summing to %v, seq %d; want 500, %d, %d", maxPoints, readings, sum, s.Seq, 499*500/2, m.Store.LastSeq())
		}
	}
}

// TestHistory_Delete: a range of messages, then a whole device, are
// deleted; counts, latest values and listings follow, and ingestion goes on.
func TestHistory_Delete(t *testing.T) {
	m := MustRunMain(t)
	c := mqttConnect(t, m.Broker.URL(), "deleter")
	for i := 0; i < 12000; i += 1000 {
		toks := []paho.Token{}
		for j := i; j < i+1000; j++ { // ts = j s: chunked deletes span several transactions
			toks = append(toks, c.Publish("devices/del/telemetry", 1, false, fmt.Sprintf(`{"n":%d,"ts":%d}`, j, int64(j)*1000)))
		}
		for _, tok := range toks {
			tok.Wait()
		}
	}
	publishN(t, c, "keep", 5)
	del := func(path string) (int, int64) {
		req, _ := http.NewRequest(http.MethodDelete, m.HTTP.URL()+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r struct{ Deleted int64 }
		json.NewDecoder(resp.Body).Decode(&r)
		return resp.StatusCode, r.Deleted
	}
	// The newest 6,000 (ts 6000 s and later): latest must fall back to n = 5999.
	if code, n := del("/api/v1/devices/del/messages?from=6000000"); code != 200 || n != 6000 {
		t.Fatalf("delete range: %d, deleted %d; want 200, 6000", code, n)
	}
	var d struct {
		MessageCount int `json:"message_count"`
		Latest       map[string]struct {
			V json.RawMessage `json:"v"`
		} `json:"latest"`
	}
	getJSON(t, m.HTTP.URL()+"/api/v1/devices/del", &d)
	if d.MessageCount != 6000 || string(d.Latest["n"].V) != "5999" {
		t.Fatalf("after range delete: count %d latest n %s; want 6000, 5999", d.MessageCount, d.Latest["n"].V)
	}
	var rows int
	m.SQLite.DB.ReadDB().QueryRow(`SELECT count(*) FROM messages m JOIN devices d ON d.id = m.device_id WHERE d.name = 'del'`).Scan(&rows)
	if rows != 6000 {
		t.Fatalf("rows left %d, want 6000", rows)
	}
	if code, n := del("/api/v1/devices/del"); code != 200 || n != 6000 {
		t.Fatalf("delete device: %d, deleted %d", code, n)
	}
	if code, _ := del("/api/v1/devices/del"); code != 404 {
		t.Fatalf("second delete: %d, want 404", code)
	}
	if code, _ := del("/api/v1/devices/del/messages?from=9&to=1"); code != 400 {
		t.Fatalf("from after to: %d, want 400", code)
	}
	var list struct{ Devices []struct{ ID string } }
	getJSON(t, m.HTTP.URL()+"/api/v1/devices", &list)
	if len(list.Devices) != 1 || list.Devices[0].ID != "keep" {
		t.Fatalf("devices after delete: %+v, want only keep", list.Devices)
	}
	// The device comes back with its next message.
	publishN(t, c, "del", 3)
	getJSON(t, m.HTTP.URL()+"/api/v1/devices/del", &d)
	if d.MessageCount != 3 {
		t.Fatalf("recreated device count %d, want 3", d.MessageCount)
	}
}

// TestHistory_Retention: --retention and a device's own retention set over
// the API delete old readings (by their ts) in the background passes.
func TestHistory_Retention(t *testing.T) {
	m := MustRunMain(t, func(c *Config) { c.Retention = "2d" })
	c := mqttConnect(t, m.Broker.URL(), "old-and-new")
	now := time.Now()
	var toks []paho.Token
	for _, dev := range []string{"fleet", "archive"} {
		for d := 0; d < 5; d++ { // one reading a day for five days
			toks = append(toks, c.Publish("devices/"+dev+"/telemetry", 1, false, fmt.Sprintf(`{"v":%d,"ts":%d}`, d, now.Add(-time.Duration(d)*24*time.Hour).UnixMilli())))
		}
	}
	for _, tok := range toks {
		tok.Wait()
	}
	waitStored(t, m, 10)
	code, body := request(t, "PUT", m.HTTP.URL()+"/api/v1/devices/archive/retention", "", `{"retention":"0"}`)
	if code != 200 || !strings.Contains(body, `"own":true`) {
		t.Fatalf("PUT retention: %d %s", code, body)
	}
	if code, body := request(t, "PUT", m.HTTP.URL()+"/api/v1/devices/archive/retention", "", `{"retention":"forever"}`); code != 400 {
		t.Fatalf("bad retention: %d %s", code, body)
	}
	res, err := m.Store.RunRetention(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for dev, want := range map[string]int{"fleet": 3, "archive": 5} { // fleet keeps today, -1d and -2d (whole hours)
		var d struct {
			MessageCount int `json:"message_count"`
		}
		getJSON(t, m.HTTP.URL()+"/api/v1/devices/"+dev, &d)
		if d.MessageCount != want {
			t.Errorf("%s: %d messages, want %d (pass %+v)", dev, d.MessageCount, want, res)
		}
	}
}

// TestHistory_ClockSkew: a device whose clock is a year ahead and one a year
// behind. Each message keeps both its device time (ts) and the hub's receive
// time; history by ts places the readings where the device said, the live
// feed, replay and time=received listings go by arrival, and latest values
// follow ts.
func TestHistory_ClockSkew(t *testing.T) {
	m := MustRunMain(t)
	c := mqttConnect(t, m.Broker.URL(), "skewed")
	now := time.Now()
	year := 365 * 24 * time.Hour
	for i, dev := range []string{"ahead", "behind"} {
		off := year
		if i == 1 {
			off = -year
		}
		for k := 0; k < 3; k++ {
			ts := now.Add(off).Add(time.Duration(k) * time.Second).UnixMilli()
			if tok := c.Publish("devices/"+dev+"/telemetry", 1, false, fmt.Sprintf(`{"v":%d,"ts":%d}`, k, ts)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatal(tok.Error())
			}
		}
	}
	ws := dialWS(t, m.HTTP.URL(), "since=0")
	got := ws.collect(t, 6, 10*time.Second) // by arrival, whatever the clocks say
	if got[0].Device != "ahead" || got[5].Device != "behind" {
		t.Fatalf("replay order %v", got)
	}
	for _, dev := range []string{"ahead", "behind"} {
		var page struct {
			Messages []struct {
				TS       int64 `json:"ts"`
				Received int64 `json:"received"`
			} `json:"messages"`
		}
		// By device time: the year-shifted window finds them, "now" does not.
		shifted := now.Add(year)
		if dev == "behind" {
			shifted = now.Add(-year)
		}
		url := fmt.Sprintf("%s/api/v1/devices/%s/messages?from=%d&to=%d", m.HTTP.URL(), dev, shifted.Add(-time.Minute).UnixMilli(), shifted.Add(time.Minute).UnixMilli())
		getJSON(t, url, &page)
		if len(page.Messages) != 3 {
			t.Fatalf("%s: %d messages in its own time window, want 3", dev, len(page.Messages))
		}
		for _, msg := range page.Messages {
			if d := msg.Received - now.UnixMilli(); d < -60_000 || d > 60_000 {
				t.Fatalf("%s: received %d is not the hub's time", dev, msg.Received)
			}
		}
		url = fmt.Sprintf("%s/api/v1/devices/%s/messages?from=%d&to=%d", m.HTTP.URL(), dev, now.Add(-time.Hour).UnixMilli(), now.Add(time.Hour).UnixMilli())
		getJSON(t, url, &page)
		if len(page.Messages) != 0 {
			t.Fatalf("%s: %d messages by device time in the last hour, want 0", dev, len(page.Messages))
		}
		getJSON(t, url+"&time=received", &page) // by arrival: all three
		if len(page.Messages) != 3 {
			t.Fatalf("%s: %d messages received in the last hour, want 3", dev, len(page.Messages))
		}
		var latest struct {
			Latest map[string]struct{ V float64 } `json:"latest"`
		}
		getJSON(t, m.HTTP.URL()+"/api/v1/devices/"+dev+"/latest", &latest)
		if latest.Latest["v"].V != 2 {
			t.Fatalf("%s: latest v=%v, want 2", dev, latest.Latest["v"].V)
		}
	}
}

// TestHistory_EpochBounds: 0 is the epoch like any other time. Before,
// time=received&from=0 overflowed to an empty list, and DELETE with
// to=1970-01-01T00:00:00Z (0, then read as "unbounded") deleted every
// message of the device.
func TestHistory_EpochBounds(t *testing.T) {
	m := MustRunMain(t)
	c := mqttConnect(t, m.Broker.URL(), "epoch")
	for _, ts := range []int64{-5000, 0, 5000} {
		if tok := c.Publish("devices/epoch/telemetry", 1, false, fmt.Sprintf(`{"v":1,"ts":%d}`, ts)); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	var page struct {
		Messages []struct {
			TS int64 `json:"ts"`
		} `json:"messages"`
	}
	base := m.HTTP.URL() + "/api/v1/devices/epoch/messages"
	for _, tt := range []struct {
		query string
		want  int
	}{
		{"time=received&from=0", 3},
		{"from=0", 2},
		{"to=0", 2},
		{"from=0&to=0", 1},
		{"to=1970-01-01T00:00:00Z", 2},
	} {
		if code := getJSON(t, base+"?"+tt.query, &page); code != 200 || len(page.Messages) != tt.want {
			t.Fatalf("%s: status %d, %d messages, want %d", tt.query, code, len(page.Messages), tt.want)
		}
	}
	req, _ := http.NewRequest(http.MethodDelete, base+"?to=1970-01-01T00:00:00Z", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var del struct{ Deleted int64 }
	json.NewDecoder(resp.Body).Decode(&del)
	resp.Body.Close()
	if resp.StatusCode != 200 || del.Deleted != 2 {
		t.Fatalf("DELETE to=epoch: status %d, deleted %d, want 2", resp.StatusCode, del.Deleted)
	}
	getJSON(t, base, &page)
	if len(page.Messages) != 1 || page.Messages[0].TS != 5000 {
		t.Fatalf("left %+v, want only the message at ts 5000", page.Messages)
	}
}

// TestHistory_ExportNoFormulas: text a device sent could reach a
// spreadsheet as a formula through the CSV export (=HYPERLINK(...),
// +cmd|...). Such cells start with an apostrophe; numbers stay numbers.
func TestHistory_ExportNoFormulas(t *testing.T) {
	m := MustRunMain(t)
	c := mqttConnect(t, m.Broker.URL(), "formulas")
	for _, p := range []string{`{"note":"=HYPERLINK(\"http://evil.example\")","v":-5}`, `{"note":"+cmd|' /C calc'!A0","v":1}`, `{"note":"@SUM(1)","v":2}`} {
		if tok := c.Publish("devices/sheet/telemetry", 1, false, p); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	resp, err := http.Get(m.HTTP.URL() + "/api/v1/export?format=csv&device=sheet&metrics=note,v")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	rows, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
	if err != nil || len(rows) != 4 {
		t.Fatalf("%d rows (%v):\n%s", len(rows), err, body)
	}
	for _, row := range rows[1:] {
		note, v := row[len(row)-2], row[len(row)-1]
		if note[0] != '\'' {
			t.Fatalf("note cell %q would be read as a formula", note)
		}
		if v == "" || v[0] == '\'' {
			t.Fatalf("number cell %q, want the number", v)
		}
	}
}

// TestHistory_DotDevices: the devices "." and ".." are valid ids, but the
// dashboard could not open them: browsers drop dot segments from paths. The
// API takes them escaped (%2E), as the dashboard now sends them.
func TestHistory_DotDevices(t *testing.T) {
	m := MustRunMain(t)
	c := mqttConnect(t, m.Broker.URL(), "dots")
	for _, id := range []string{".", ".."} {
		if tok := c.Publish("devices/"+id+"/telemetry", 1, false, `{"v":1}`); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
		var dev struct{ ID string }
		esc := strings.ReplaceAll(id, ".", "%2E")
		if code := getJSON(t, m.HTTP.URL()+"/api/v1/devices/"+esc, &dev); code != 200 || dev.ID != id {
			t.Fatalf("GET /devices/%s: %d %q, want 200 %q", esc, code, dev.ID, id)
		}
		var page struct{ Messages []json.RawMessage }
		if code := getJSON(t, m.HTTP.URL()+"/api/v1/devices/"+esc+"/messages", &page); code != 200 || len(page.Messages) != 1 {
			t.Fatalf("GET /devices/%s/messages: %d, %d messages", esc, code, len(page.Messages))
		}
	}
}
