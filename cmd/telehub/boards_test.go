package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

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
