package devices

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestBoardWindow(t *testing.T) {
	for w, want := range map[string]time.Duration{
		"5m": 5 * time.Minute, "90m": 90 * time.Minute, "12h": 12 * time.Hour, "30d": 30 * 24 * time.Hour, "90d": 90 * 24 * time.Hour,
		"": 0, "0m": 0, "91d": 0, "1.5h": 0, "1w": 0, "-1h": 0, "01h": 0, "1H": 0, "999999d": 0, "1h ": 0,
	} {
		if got := BoardWindow(w); got != want {
			t.Errorf("BoardWindow(%q) = %v, want %v", w, got, want)
		}
	}
}

// TestBoardValidate: each panel kind's own fields are checked, and the
// error names the panel and the field.
func TestBoardValidate(t *testing.T) {
	for _, tc := range []struct {
		panel string
		want  string // "" when valid
	}{
		{`{"kind":"command","device":"d-1","method":"reboot","params":{"delay":5},"button":"Reboot"}`, ""},
		{`{"kind":"command","device":"$dev","method":"ping"}`, ""},
		{`{"kind":"command","method":"reboot"}`, "device"},
		{`{"kind":"command","device":"d-1","method":"re boot"}`, "method"},
		{`{"kind":"command","device":"d-1","method":"x","params":[1]}`, "params"},
		{`{"kind":"command","device":"d-1","method":"x","params":"s"}`, "params"},
		{`{"kind":"map","device_prefix":"t-","track":true,"tiles":"https://tile.openstreetmap.org/{z}/{x}/{y}.png"}`, ""},
		{`{"kind":"map","tiles":"http://tile.openstreetmap.org/{z}/{x}/{y}.png"}`, "tiles"},
		{`{"kind":"map","tiles":"https://tiles.example.com/{z}/{x}.png"}`, "tiles"},
		{`{"kind":"map","tiles":"javascript:alert(1)//{z}{x}{y}"}`, "tiles"},
		{`{"kind":"alerts","device_prefix":"t-"}`, ""},
		{`{"kind":"alerts","device_prefix":"t/"}`, "device_prefix"},
		{`{"kind":"stat","device":"d","metric":"m","decimals":11}`, "decimals"},
		{`{"kind":"gauge"}`, "kind"},
	} {
		var b Board
		if err := json.Unmarshal([]byte(`{"name":"b","variables":[{"name":"dev"}],"panels":[`+tc.panel+`]}`), &b); err != nil {
			t.Fatal(err)
		}
		err := b.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.panel, err)
		case tc.want != "" && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "panel 1: "+tc.want)):
			t.Errorf("%s: %v, want an error about %s", tc.panel, err, tc.want)
		}
	}
	b := Board{Name: "b", Window: "2w"}
	if err := b.Validate(); err == nil || !strings.Contains(err.Error(), "window") {
		t.Errorf("window 2w: %v", err)
	}
	b.Window = "45m"
	if err := b.Validate(); err != nil {
		t.Errorf("window 45m: %v", err)
	}
}
