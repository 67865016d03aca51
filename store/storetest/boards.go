package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store"
)

func testBoards(t *testing.T, h *harness) {
	s := h.open(store.Options{})
	ctx := context.Background()
	dec := 1
	b := devices.Board{Name: "Kitchen", Window: "24h", Created: t0, Updated: t0, Variables: []devices.Variable{{Name: "device", Prefix: "k-"}}, Panels: []devices.Panel{
		{Kind: devices.PanelStat, Device: "$device", Metric: "temp"},
		{Kind: devices.PanelTimeSeries, Title: "temps", W: 12, H: 4, Series: []devices.SeriesRef{{Device: "k-1", Metric: "temp", Color: "#f00"}, {DevicePrefix: "k-", Metric: "hum"}}, Decimals: &dec},
		{Kind: devices.PanelText, Y: 4, Text: "# Notes\nüñí"},
		{Kind: devices.PanelCommand, Y: 8, Device: "k-1", Method: "reboot", Params: []byte(`{"delay":5}`), Button: "Reboot"},
		{Kind: devices.PanelMap, Y: 12, DevicePrefix: "k-", Track: true, Tiles: "https://tile.example.com/{z}/{x}/{y}.png"},
		{Kind: devices.PanelAlerts, Y: 18, DevicePrefix: "k-"},
	}}
	got, err := s.CreateBoard(ctx, b)
	if err != nil || got.ID <= 0 {
		t.Fatalf("CreateBoard = %+v, %v", got, err)
	}
	if _, err := s.CreateBoard(ctx, b); !errors.Is(err, devices.ErrConflict) {
		t.Fatalf("a second board named Kitchen: %v, want ErrConflict", err)
	}
	if _, err := s.CreateBoard(ctx, devices.Board{Name: "x", Panels: []devices.Panel{{Kind: devices.PanelStat, Device: "$nope", Metric: "m"}}}); !errors.Is(err, devices.ErrInvalid) {
		t.Fatalf("a panel naming an unknown variable: %v, want ErrInvalid", err)
	}
	if _, err := s.CreateBoard(ctx, devices.Board{Name: "x", Panels: []devices.Panel{{Kind: "gauge"}}}); !errors.Is(err, devices.ErrInvalid) {
		t.Fatalf("a panel of an unknown kind: %v, want ErrInvalid", err)
	}
	read, err := s.Board(ctx, got.ID)
	if err != nil || read.Name != "Kitchen" || read.Window != "24h" || len(read.Panels) != 6 || read.Panels[1].Series[1].DevicePrefix != "k-" ||
		*read.Panels[1].Decimals != 1 || read.Panels[2].Text != "# Notes\nüñí" || read.Panels[2].W != 6 || len(read.Variables) != 1 || read.Panels[0].Device != "$device" {
		t.Fatalf("Board = %+v, %v", read, err)
	}
	if c, m := read.Panels[3], read.Panels[4]; c.Method != "reboot" || string(c.Params) != `{"delay":5}` || c.Button != "Reboot" || !m.Track || m.Tiles == "" || read.Panels[5].Kind != devices.PanelAlerts {
		t.Fatalf("command, map and alerts panels read back as %+v, %+v, %+v", c, m, read.Panels[5])
	}
	read.Name, read.Panels, read.Updated = "Kitchen 2", read.Panels[:2], t0+1
	if _, err := s.UpdateBoard(ctx, *read); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateBoard(ctx, devices.Board{Name: "Alpha", Created: t0, Updated: t0}); err != nil {
		t.Fatal(err)
	}
	list, err := s.Boards(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "Alpha" || list[1].Name != "Kitchen 2" || len(list[1].Panels) != 2 || list[1].Created != t0 || list[1].Updated != t0+1 {
		t.Fatalf("Boards = %+v, %v", list, err)
	}
	list[0].Name = "Kitchen 2"
	if _, err := s.UpdateBoard(ctx, list[0]); !errors.Is(err, devices.ErrConflict) {
		t.Fatalf("renaming onto another board: %v", err)
	}
	if _, err := s.UpdateBoard(ctx, devices.Board{ID: 99999, Name: "nope"}); !errors.Is(err, devices.ErrNotFound) {
		t.Fatalf("UpdateBoard of an unknown board: %v", err)
	}
	if err := s.DeleteBoard(ctx, got.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Board(ctx, got.ID); !errors.Is(err, devices.ErrNotFound) {
		t.Fatalf("a deleted board: %v", err)
	}
	if err := s.DeleteBoard(ctx, got.ID); !errors.Is(err, devices.ErrNotFound) {
		t.Fatalf("deleting twice: %v", err)
	}
}

func testMetricSettings(t *testing.T, h *harness) {
	s := h.open(store.Options{})
	ctx := context.Background()
	if list, err := s.MetricSettings(ctx); err != nil || len(list) != 0 {
		t.Fatalf("MetricSettings of a new store = %+v, %v", list, err)
	}
	one, lo, hi := 1, -40.0, 85.0
	if err := s.SetMetricSetting(ctx, devices.MetricSetting{Metric: "temp", Label: " Temperature ", Unit: "°C", Decimals: &one, Min: &lo, Max: &hi, Updated: t0}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetMetricSetting(ctx, devices.MetricSetting{Metric: "hum", Unit: "%", Updated: t0}); err != nil {
		t.Fatal(err)
	}
	// A second write replaces the first, fields it leaves out included.
	if err := s.SetMetricSetting(ctx, devices.MetricSetting{Metric: "hum", Label: "Humidity", Updated: t0 + 1}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []devices.MetricSetting{{Metric: ""}, {Metric: "x", Min: &hi, Max: &lo}, {Metric: "x", Unit: string(make([]byte, 33))}} {
		if err := s.SetMetricSetting(ctx, bad); !errors.Is(err, devices.ErrInvalid) {
			t.Fatalf("SetMetricSetting(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
	list, err := s.MetricSettings(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("MetricSettings = %+v, %v", list, err)
	}
	hum, temp := list[0], list[1]
	if hum.Metric != "hum" || hum.Label != "Humidity" || hum.Unit != "" || hum.Updated != t0+1 {
		t.Fatalf("hum = %+v", hum)
	}
	if temp.Metric != "temp" || temp.Label != "Temperature" || temp.Unit != "°C" || *temp.Decimals != 1 || *temp.Min != -40 || *temp.Max != 85 || temp.Updated != t0 {
		t.Fatalf("temp = %+v", temp)
	}
	if err := s.DeleteMetricSetting(ctx, "hum"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMetricSetting(ctx, "hum"); !errors.Is(err, devices.ErrNotFound) {
		t.Fatalf("deleting twice: %v", err)
	}
	if list, _ := s.MetricSettings(ctx); len(list) != 1 || list[0].Metric != "temp" {
		t.Fatalf("after the delete: %+v", list)
	}
}
