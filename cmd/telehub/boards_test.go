package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/telehub/telehub/devices"
)

// TestBoards_API: a fresh hub with devices gets its Fleet board; a board
// exported (GET) imports (POST) as it was; a read token sees boards and
// cannot change them; bad boards are 400 with the panel named.
func TestBoards_API(t *testing.T) {
	m := MustRunMain(t)
	ctx := context.Background()
	base := m.HTTP.URL()
	var list struct{ Boards []devices.Board }
	if getJSON(t, base+"/api/v1/boards", &list); len(list.Boards) != 0 {
		t.Fatalf("a hub without devices has boards: %+v", list.Boards)
	}
	c := mqttConnect(t, m.Broker.URL(), "fleet-pub")
	for _, d := range []string{"truck-1", "truck-2"} {
		if tok := c.Publish("devices/"+d+"/telemetry", 1, false, `{"speed":50,"lat":48.1,"lon":11.5,"fuel":0.7}`); !tok.Wait() || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	waitStored(t, m, 2)
	getJSON(t, base+"/api/v1/boards", &list)
	if len(list.Boards) != 1 || list.Boards[0].Name != "Fleet" {
		t.Fatalf("boards of a fresh hub: %+v", list.Boards)
	}
	kinds := ""
	for _, p := range list.Boards[0].Panels {
		kinds += string(p.Kind) + " "
	}
	if kinds != "status table timeseries timeseries map " {
		t.Fatalf("Fleet board panels: %s", kinds)
	}

	// Export, import: the same board under a new id.
	code, exported := request(t, "GET", fmt.Sprintf("%s/api/v1/boards/%d", base, list.Boards[0].ID), "", "")
	if code != http.StatusOK {
		t.Fatalf("export: %d", code)
	}
	var b devices.Board
	json.Unmarshal([]byte(exported), &b)
	b.Name = "Fleet (imported)"
	again, _ := json.Marshal(b)
	code, body := request(t, "POST", base+"/api/v1/boards", "", string(again))
	if code != http.StatusCreated {
		t.Fatalf("import: %d %s", code, body)
	}
	var imported devices.Board
	json.Unmarshal([]byte(body), &imported)
	x, _ := json.Marshal(b.Panels)
	y, _ := json.Marshal(imported.Panels)
	if imported.ID == b.ID || string(x) != string(y) {
		t.Fatalf("imported %s\nexported %s", y, x)
	}
	for _, bad := range []string{`{"name":"x","panels":[{"kind":"gauge"}]}`, `{"name":"x","panels":[{"kind":"timeseries"}]}`,
		`{"name":"x","panels":[{"kind":"stat","metric":"t"}]}`, `{"name":"x","panels":[{"kind":"text","x":9223372036854775807,"w":1}]}`,
		`{"name":"x","panels":[{"kind":"text","colour":"red"}]}`, `{"name":"","panels":[]}`} {
		if code, body := request(t, "POST", base+"/api/v1/boards", "", bad); code != http.StatusBadRequest {
			t.Errorf("POST %s: %d %s, want 400", bad, code, body)
		}
	}

	// With tokens, a read token sees boards and cannot change them.
	admin, _ := m.Store.AddToken(ctx, "ops", devices.ScopeAdmin)
	read, _ := m.Store.AddToken(ctx, "viewer", devices.ScopeRead)
	path := fmt.Sprintf("%s/api/v1/boards/%d", base, imported.ID)
	checkFor(t, 5*time.Second, func() error { // the hub notices new tokens within a second
		if code, _ := request(t, "GET", path, "", ""); code != http.StatusUnauthorized {
			return fmt.Errorf("GET without a token: %d", code)
		}
		return nil
	})
	if code, _ := request(t, "GET", path, read, ""); code != http.StatusOK {
		t.Fatalf("read token GET: %d", code)
	}
	for _, r := range []struct{ method, path, body string }{{"PUT", path, string(again)}, {"DELETE", path, ""}, {"POST", base + "/api/v1/boards", `{"name":"y","panels":[]}`}} {
		if code, _ := request(t, r.method, r.path, read, r.body); code != http.StatusForbidden {
			t.Errorf("read token %s: %d, want 403", r.method, code)
		}
	}
	if code, _ := request(t, "DELETE", path, admin, ""); code != http.StatusNoContent {
		t.Fatalf("admin DELETE: %d", code)
	}
	// A Fleet board deleted stays deleted: it is made once.
	fleet := fmt.Sprintf("%s/api/v1/boards/%d", base, list.Boards[0].ID)
	if code, _ := request(t, "DELETE", fleet, admin, ""); code != http.StatusNoContent {
		t.Fatalf("DELETE Fleet: %d", code)
	}
	var after struct{ Boards []devices.Board }
	if code, body := request(t, "GET", base+"/api/v1/boards", admin, ""); code != http.StatusOK || json.Unmarshal([]byte(body), &after) != nil || len(after.Boards) != 0 {
		t.Fatalf("after deleting every board: %d %s", code, body)
	}
}

// TestMetricSettings_API: a metric's display settings are set, read, and
// removed through the API; only an admin may change them; a name with
// any character is a path segment.
func TestMetricSettings_API(t *testing.T) {
	m := MustRunMain(t)
	ctx := context.Background()
	base := m.HTTP.URL() + "/api/v1/metric-settings"
	code, body := request(t, "PUT", base+"/temp", "", `{"label":"Temperature","unit":"°C","decimals":1,"min":-20,"max":50}`)
	if code != http.StatusOK || !strings.Contains(body, `"unit":"°C"`) {
		t.Fatalf("PUT: %d %s", code, body)
	}
	if code, body := request(t, "PUT", base+"/a%2Fb%20c", "", `{"unit":"%"}`); code != http.StatusOK || !strings.Contains(body, `"metric":"a/b c"`) {
		t.Fatalf("PUT of an escaped name: %d %s", code, body)
	}
	for _, bad := range []struct{ path, body string }{
		{"/temp", `{"decimals":11}`}, {"/temp", `{"min":5,"max":1}`}, {"/temp", `{"colour":"red"}`}, {"/temp", `{"metric":"hum"}`},
		{"/temp", `{"max":1e999}`}, {"/temp", `[]`},
	} {
		if code, body := request(t, "PUT", base+bad.path, "", bad.body); code != http.StatusBadRequest {
			t.Errorf("PUT %s %s: %d %s, want 400", bad.path, bad.body, code, body)
		}
	}
	var list struct{ Metrics []devices.MetricSetting }
	getJSON(t, base, &list)
	if len(list.Metrics) != 2 || list.Metrics[0].Metric != "a/b c" || list.Metrics[1].Label != "Temperature" || *list.Metrics[1].Max != 50 {
		t.Fatalf("GET: %+v", list.Metrics)
	}
	if code, _ := request(t, "DELETE", base+"/a%2Fb%20c", "", ""); code != http.StatusNoContent {
		t.Fatalf("DELETE: %d", code)
	}
	if code, _ := request(t, "DELETE", base+"/a%2Fb%20c", "", ""); code != http.StatusNotFound {
		t.Fatalf("DELETE again: %d, want 404", code)
	}
	read, _ := m.Store.AddToken(ctx, "viewer", devices.ScopeRead)
	checkFor(t, 5*time.Second, func() error {
		if code, _ := request(t, "GET", base, "", ""); code != http.StatusUnauthorized {
			return fmt.Errorf("GET without a token: %d", code)
		}
		return nil
	})
	if code, _ := request(t, "GET", base, read, ""); code != http.StatusOK {
		t.Fatalf("read token GET: %d", code)
	}
	if code, _ := request(t, "PUT", base+"/temp", read, `{"unit":"K"}`); code != http.StatusForbidden {
		t.Fatalf("read token PUT: %d, want 403", code)
	}
}

// TestBrowser_BoardActions: a board's command button sends its command and
// shows the device's answer; its alerts panel shows an alert raised while
// the page is open, without a reload; a metric's display settings, set on
// the device view, apply to the board's stat and table.
func TestBrowser_BoardActions(t *testing.T) {
	b := newBrowser(t)
	m := MustRunMain(t)
	postRule(t, m.HTTP.URL(), `{"name":"hot","device_prefix":"kiln","metric":"temp","op":">","value":30,"severity":"major"}`)
	dev := mqttConnect(t, m.Broker.URL(), "kiln-1")
	now := time.Now().UnixMilli()
	publishReadings(t, dev, "kiln-1", []int64{now - 2000}, []int{20})
	answerCommands(t, dev, "kiln-1")
	code, body := request(t, "POST", m.HTTP.URL()+"/api/v1/boards", "", `{"name":"Kiln","panels":[`+
		`{"kind":"command","x":0,"y":0,"w":4,"h":3,"device":"kiln-1","method":"setInterval","params":{"seconds":5},"button":"Every 5 s"},`+
		`{"kind":"alerts","x":4,"y":0,"w":8,"h":3,"device_prefix":"kiln"},`+
		`{"kind":"stat","x":0,"y":3,"w":4,"h":3,"device":"kiln-1","metric":"temp","gauge":true,"min":0,"max":40},`+
		`{"kind":"table","x":4,"y":3,"w":8,"h":2,"device_prefix":"kiln","columns":["temp"]}]}`)
	if code != http.StatusCreated {
		t.Fatalf("board: %d %s", code, body)
	}
	var board struct{ ID int64 }
	json.Unmarshal([]byte(body), &board)

	// Display settings through the device view's chart form.
	b.run(t,
		chromedp.Navigate(m.HTTP.URL()+"/#/device/kiln-1"),
		chromedp.WaitVisible(chromedp.CSS(`section.chart[data-metric="temp"] button[data-action="metric-settings"]`)),
		chromedp.Click(chromedp.CSS(`section.chart[data-metric="temp"] button[data-action="metric-settings"]`)),
		chromedp.SetValue(chromedp.CSS(`form.metric-settings input[name="label"]`), "Kiln temperature"),
		chromedp.SetValue(chromedp.CSS(`form.metric-settings input[name="unit"]`), "°C"),
		chromedp.SetValue(chromedp.CSS(`form.metric-settings input[name="decimals"]`), "2"),
		chromedp.Click(chromedp.CSS(`form.metric-settings button[type="submit"]`)),
		chromedp.WaitNotVisible(chromedp.CSS(`form.metric-settings`)),
	)
	checkFor(t, 10*time.Second, func() error {
		got, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('section.chart[data-metric="temp"] .chart-title, section.chart[data-metric="temp"] .latest')].map((e) => e.textContent)`))
		if err != nil || len(got) != 2 || got[0] != "Kiln temperature (°C) temp" || got[1] != "20.00 °C" {
			return fmt.Errorf("chart title and latest value %q (%v)", got, err)
		}
		return nil
	})

	b.run(t, goHash(fmt.Sprintf("#/board/%d", board.ID)))
	b.waitBoard(t, "the board with the metric's settings", func(st *boardState) error {
		if v := st.panel("stat").Value; v != "20.00 °C" {
			return fmt.Errorf("stat %q", v)
		}
		if rows := st.panel("table").Rows; len(rows) != 1 || rows[0][2] != "20.00" {
			return fmt.Errorf("table %v", rows)
		}
		if c := st.panel("command"); c.Status != "" {
			return fmt.Errorf("command panel before a click: %+v", c)
		}
		return nil
	})
	if got := b.text(t, `section.panel[data-kind="table"] th:nth-child(3)`); !strings.EqualFold(got, "Kiln temperature (°C)") {
		t.Fatalf("table column %q", got)
	}
	b.run(t, chromedp.Click(chromedp.CSS(`section.panel[data-kind="command"] button[data-action="send-command"]`)))
	b.waitBoard(t, "the command's answer", func(st *boardState) error {
		if c := st.panel("command"); c.Status != "replied" || fmt.Sprint(c.Response) != "map[echo:map[seconds:5]]" {
			return fmt.Errorf("command panel %+v", c)
		}
		return nil
	})
	if got := b.text(t, `section.panel[data-kind="command"] pre`); !strings.Contains(got, `"seconds": 5`) {
		t.Fatalf("answer shown as %q", got)
	}
	publishReadings(t, dev, "kiln-1", []int64{now - 1000}, []int{35})
	b.waitBoard(t, "the alert, live", func(st *boardState) error {
		if a := st.panel("alerts").Alerts; len(a) != 1 || a[0].Device != "kiln-1" || a[0].Severity != "major" || a[0].Status != "active" {
			return fmt.Errorf("alerts panel %+v; the hub's: %+v", a, listAlerts(t, m.HTTP.URL(), ""))
		}
		// 35 of 0..40: seven eighths of the arc, whose end is at
		// 50+40cos(π/8), 50-40sin(π/8).
		if p := st.panel("stat"); p.Value != "35.00 °C" || p.Gauge != "M 10 50 A 40 40 0 0 1 86.96 34.69" {
			return fmt.Errorf("stat %q, gauge %q", p.Value, p.Gauge)
		}
		return nil
	})
	b.screenshot(t, "board-actions")
	b.checkNoErrors(t)
}
