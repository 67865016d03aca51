package devices

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

var variableName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,31}$`)

// PanelKind is what a board panel shows.
type PanelKind string

// The kinds of panel.
const (
	PanelTimeSeries PanelKind = "timeseries" // metrics of devices over the board's window, on one chart
	PanelStat       PanelKind = "stat"       // the latest value of one metric, with a sparkline
	PanelTable      PanelKind = "table"      // latest values of many devices, by column
	PanelMap        PanelKind = "map"        // positions of devices that report lat/lon
	PanelStatus     PanelKind = "status"     // online/offline and last seen of devices
	PanelText       PanelKind = "text"       // Markdown notes
	PanelCommand    PanelKind = "command"    // a button that sends a device a command, with its answer
	PanelAlerts     PanelKind = "alerts"     // the open alerts of devices
)

// PanelKinds lists every kind.
var PanelKinds = []PanelKind{PanelTimeSeries, PanelStat, PanelTable, PanelMap, PanelStatus, PanelText, PanelCommand, PanelAlerts}

// Board is a dashboard a user composes: a grid of panels with a time window
// for all of them. It is stored as the user wrote it (JSON), so that an
// exported board imports as it was.
type Board struct {
	ID     int64  `json:"id"`
	Name   string `json:"name"`
	Window string `json:"window,omitempty"` // "5m" ... "30d"; default 1h
	// Variables are choices the viewer makes for the whole board: a
	// panel's device "$device" is the device chosen among those of the
	// variable's prefix, so one board serves a whole fleet.
	Variables []Variable `json:"variables,omitempty"`
	Panels    []Panel    `json:"panels"`
	Created   int64      `json:"created"`
	Updated   int64      `json:"updated"`
}

// Panel is one tile of a board. Position and size are in grid cells (12
// columns); which fields apply depends on Kind.
type Panel struct {
	Kind  PanelKind `json:"kind"`
	Title string    `json:"title,omitempty"`
	X     int       `json:"x"`
	Y     int       `json:"y"`
	W     int       `json:"w"`
	H     int       `json:"h"`
	// Series are a time-series panel's lines: a metric of one device, or
	// of every device whose id starts with DevicePrefix.
	Series []SeriesRef `json:"series,omitempty"`
	// Device and Metric are a stat panel's; DevicePrefix and Columns
	// (metrics) select a table's or a status panel's rows and columns, a
	// map's or an alerts panel's devices.
	Device       string   `json:"device,omitempty"`
	Metric       string   `json:"metric,omitempty"`
	DevicePrefix string   `json:"device_prefix,omitempty"`
	Columns      []string `json:"columns,omitempty"`
	// A map draws each device's Track over the window when set, over
	// Tiles (an https tile URL with {z}, {x} and {y}) when given, else
	// over the country outlines shipped with the hub.
	Track bool   `json:"track,omitempty"`
	Tiles string `json:"tiles,omitempty"`
	// A command panel's button sends Device the command Method with
	// Params (a JSON object) and shows the answer; Button is its label.
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	Button string          `json:"button,omitempty"`
	// Display settings. A stat with Gauge set draws its value on an arc
	// from Min to Max (the metric's, when the panel sets none).
	Gauge      bool        `json:"gauge,omitempty"`
	Unit       string      `json:"unit,omitempty"`
	Decimals   *int        `json:"decimals,omitempty"`
	Min        *float64    `json:"min,omitempty"`
	Max        *float64    `json:"max,omitempty"`
	Thresholds []Threshold `json:"thresholds,omitempty"`
	// Text is a text panel's Markdown.
	Text string `json:"text,omitempty"`
}

// Variable is a board's device selector: $Name stands for one device
// whose id starts with Prefix.
type Variable struct {
	Name   string `json:"name"`
	Prefix string `json:"prefix,omitempty"`
}

// SeriesRef names the metric of one device, or of the devices whose id
// starts with DevicePrefix (neither set: every device).
type SeriesRef struct {
	Device       string `json:"device,omitempty"`
	DevicePrefix string `json:"device_prefix,omitempty"`
	Metric       string `json:"metric"`
	Color        string `json:"color,omitempty"`
	Label        string `json:"label,omitempty"`
}

// Threshold colours values from Value up (a stat's colour, a line on a
// chart).
type Threshold struct {
	Value float64 `json:"value"`
	Color string  `json:"color"`
}

// Limits of a board.
const (
	MaxBoardName     = 200
	MaxBoardPanels   = 50
	MaxPanelSeries   = 20
	MaxPanelColumns  = 20
	MaxPanelText     = 20 << 10
	MaxBoardJSON     = 256 << 10
	BoardGridColumns = 12
)

// BoardWindows are the windows the dashboard offers; a board may have any
// other of BoardWindow's.
var BoardWindows = []string{"5m", "15m", "1h", "6h", "24h", "7d", "30d"}

var windowRE = regexp.MustCompile(`^([1-9][0-9]{0,4})([mhd])$`)

// BoardWindow is the length of a board's window written as a whole number
// of minutes, hours or days ("90m", "12h", "3d"), from 1m to 90d; 0 when w
// is not one.
func BoardWindow(w string) time.Duration {
	m := windowRE.FindStringSubmatch(w)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	d := time.Duration(n) * map[string]time.Duration{"m": time.Minute, "h": time.Hour, "d": 24 * time.Hour}[m[2]]
	if d > 90*24*time.Hour {
		return 0
	}
	return d
}

// Validate checks b; errors wrap ErrInvalid and name the panel and field.
func (b *Board) Validate() error {
	b.Name = strings.TrimSpace(b.Name)
	if b.Name == "" || len(b.Name) > MaxBoardName || !utf8.ValidString(b.Name) {
		return fmt.Errorf("%w: board name: want 1 to %d characters", ErrInvalid, MaxBoardName)
	}
	if b.Window != "" && BoardWindow(b.Window) == 0 {
		return fmt.Errorf("%w: window %q: want one of %s, or minutes, hours or days (90m, 12h, 3d) from 1m to 90d", ErrInvalid, b.Window, strings.Join(BoardWindows, ", "))
	}
	if b.Panels == nil {
		b.Panels = []Panel{}
	}
	vars := map[string]bool{}
	if len(b.Variables) > 4 {
		return fmt.Errorf("%w: at most 4 variables", ErrInvalid)
	}
	for _, v := range b.Variables {
		if !variableName.MatchString(v.Name) || vars[v.Name] {
			return fmt.Errorf("%w: variable %q: want a unique name of letters, digits and _ (used as $name)", ErrInvalid, v.Name)
		}
		if len(v.Prefix) > MaxDeviceIDLen || strings.ContainsAny(v.Prefix, "+#/") {
			return fmt.Errorf("%w: variable %q: prefix at most %d characters, without / + #", ErrInvalid, v.Name, MaxDeviceIDLen)
		}
		vars[v.Name] = true
	}
	if len(b.Panels) > MaxBoardPanels {
		return fmt.Errorf("%w: at most %d panels", ErrInvalid, MaxBoardPanels)
	}
	for i := range b.Panels {
		if err := b.Panels[i].validate(vars); err != nil {
			return fmt.Errorf("%w: panel %d: %v", ErrInvalid, i+1, err)
		}
	}
	return nil
}

func (p *Panel) validate(vars map[string]bool) error {
	if !contains(PanelKinds, p.Kind) {
		return fmt.Errorf("kind %q: want timeseries, stat, table, map, status, text, command or alerts", p.Kind)
	}
	if len(p.Title) > MaxBoardName || !utf8.ValidString(p.Title) {
		return fmt.Errorf("title: at most %d characters", MaxBoardName)
	}
	if p.W == 0 {
		p.W = 6
	}
	if p.H == 0 {
		p.H = 4
	}
	if p.X < 0 || p.Y < 0 || p.W < 1 || p.H < 1 || p.X >= BoardGridColumns || p.W > BoardGridColumns || p.X+p.W > BoardGridColumns || p.H > 24 || p.Y > 1000 {
		return fmt.Errorf("position: x, y, w, h must fit a grid of %d columns (w 1..12, h 1..24)", BoardGridColumns)
	}
	device := func(field, id string) error {
		if id == "" {
			return nil
		}
		if name, ok := strings.CutPrefix(id, "$"); ok {
			if !vars[name] {
				return fmt.Errorf("%s: %q names no variable of the board", field, id)
			}
			return nil
		}
		if err := ValidateDeviceID(id); err != nil {
			return fmt.Errorf("%s: %v", field, err)
		}
		return nil
	}
	prefix := func(field, s string) error {
		if len(s) > MaxDeviceIDLen || strings.ContainsAny(s, "+#/") {
			return fmt.Errorf("%s: at most %d characters, without / + #", field, MaxDeviceIDLen)
		}
		return nil
	}
	metric := func(field, m string) error {
		if m == "" || len(m) > maxRuleMetric {
			return fmt.Errorf("%s: want a metric name of 1 to %d bytes", field, maxRuleMetric)
		}
		return nil
	}
	for _, err := range []error{device("device", p.Device), prefix("device_prefix", p.DevicePrefix)} {
		if err != nil {
			return err
		}
	}
	switch p.Kind {
	case PanelTimeSeries:
		if len(p.Series) == 0 || len(p.Series) > MaxPanelSeries {
			return fmt.Errorf("series: want 1 to %d", MaxPanelSeries)
		}
		for j, s := range p.Series {
			if s.Device != "" && s.DevicePrefix != "" {
				return fmt.Errorf("series %d: device or device_prefix, not both", j+1)
			}
			for _, err := range []error{device(fmt.Sprintf("series %d: device", j+1), s.Device), prefix(fmt.Sprintf("series %d: device_prefix", j+1), s.DevicePrefix),
				metric(fmt.Sprintf("series %d: metric", j+1), s.Metric)} {
				if err != nil {
					return err
				}
			}
			if len(s.Label) > MaxBoardName || len(s.Color) > 32 {
				return fmt.Errorf("series %d: label or color too long", j+1)
			}
		}
	case PanelStat:
		if p.Device == "" {
			return fmt.Errorf("device: a stat panel shows one device's metric")
		}
		if err := metric("metric", p.Metric); err != nil {
			return err
		}
	case PanelCommand:
		if p.Device == "" {
			return fmt.Errorf("device: a command panel sends one device its command")
		}
		if !methodRE.MatchString(p.Method) {
			return fmt.Errorf("method: 1-64 letters, digits or _.:-")
		}
		if len(p.Params) > 0 {
			if len(p.Params) > 4096 || !json.Valid(p.Params) || bytes.TrimSpace(p.Params)[0] != '{' {
				return fmt.Errorf("params: want a JSON object of at most 4 KiB")
			}
		}
		if len(p.Button) > MaxBoardName || !utf8.ValidString(p.Button) {
			return fmt.Errorf("button: at most %d characters", MaxBoardName)
		}
	case PanelMap:
		if p.Tiles != "" {
			u, err := url.Parse(p.Tiles)
			if err != nil || u.Scheme != "https" || u.Host == "" || len(p.Tiles) > 500 ||
				!strings.Contains(p.Tiles, "{z}") || !strings.Contains(p.Tiles, "{x}") || !strings.Contains(p.Tiles, "{y}") {
				return fmt.Errorf("tiles: want an https URL with {z}, {x} and {y}, such as https://tile.openstreetmap.org/{z}/{x}/{y}.png")
			}
		}
	case PanelTable, PanelStatus:
		if len(p.Columns) > MaxPanelColumns {
			return fmt.Errorf("columns: at most %d", MaxPanelColumns)
		}
		for _, c := range p.Columns {
			if err := metric("columns", c); err != nil {
				return err
			}
		}
	case PanelText:
		if len(p.Text) > MaxPanelText || !utf8.ValidString(p.Text) {
			return fmt.Errorf("text: at most %d bytes of UTF-8", MaxPanelText)
		}
	}
	if err := checkDisplay(p.Decimals, p.Min, p.Max); err != nil {
		return err
	}
	if len(p.Thresholds) > 10 {
		return fmt.Errorf("thresholds: at most 10")
	}
	for _, t := range p.Thresholds {
		if !finite(t.Value) || len(t.Color) > 32 {
			return fmt.Errorf("thresholds: a finite value and a colour")
		}
	}
	if len(p.Unit) > 32 {
		return fmt.Errorf("unit: at most 32 bytes")
	}
	return nil
}

func contains[T comparable](list []T, v T) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// BoardStore keeps boards.
type BoardStore interface {
	// CreateBoard stores a new board (ErrConflict when the name is taken);
	// UpdateBoard replaces one (ErrNotFound); DeleteBoard deletes one.
	CreateBoard(ctx context.Context, b Board) (*Board, error)
	UpdateBoard(ctx context.Context, b Board) (*Board, error)
	DeleteBoard(ctx context.Context, id int64) error
	Board(ctx context.Context, id int64) (*Board, error)
	// Boards lists every board, by name.
	Boards(ctx context.Context) ([]Board, error)
}

// FleetBoard is the board a fresh hub shows first, made from what its
// devices report: their status, a table of their latest values, a chart of
// each of the metrics most devices have, and a map when some report
// lat/lon. Prefixes group the fleet the way its ids do ("thermo-1",
// "thermo-2": "thermo-").
func FleetBoard(devs []*Device, now int64) Board {
	count := map[string]int{}
	located := false
	for _, d := range devs {
		for k, l := range d.Latest {
			if _, ok := NumericValue(l.Value); ok {
				count[k]++
			}
		}
		_, lat := d.Latest["lat"]
		_, lon := d.Latest["lon"]
		located = located || lat && lon
	}
	metrics := make([]string, 0, len(count))
	for k := range count {
		if k != "ts" && k != "lat" && k != "lon" {
			metrics = append(metrics, k)
		}
	}
	// Most common first, then by name.
	sortStrings(metrics, func(a, b string) bool { return count[a] > count[b] || count[a] == count[b] && a < b })
	cols := metrics[:min(len(metrics), 6)]
	b := Board{Name: "Fleet", Window: "1h", Created: now, Updated: now, Panels: []Panel{
		{Kind: PanelStatus, Title: "Status", X: 0, Y: 0, W: 4, H: 5},
		{Kind: PanelTable, Title: "Latest values", X: 4, Y: 0, W: 8, H: 5, Columns: append([]string(nil), cols...)},
	}}
	y := 5
	for i, m := range metrics[:min(len(metrics), 4)] {
		b.Panels = append(b.Panels, Panel{Kind: PanelTimeSeries, Title: m, X: (i % 2) * 6, Y: y + (i/2)*4, W: 6, H: 4,
			Series: []SeriesRef{{Metric: m}}})
	}
	y += (min(len(metrics), 4) + 1) / 2 * 4
	if located {
		b.Panels = append(b.Panels, Panel{Kind: PanelMap, Title: "Where", X: 0, Y: y, W: 12, H: 6, Track: true})
	}
	return b
}

func sortStrings(s []string, less func(a, b string) bool) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && less(s[j], s[j-1]); j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}
