package devices

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MetricSetting is how a metric is shown wherever it is drawn: the device
// view's charts and every board panel that does not set its own. Settings
// are per metric name, for the whole hub ("temp" is °C on every device).
type MetricSetting struct {
	Metric   string   `json:"metric"`
	Label    string   `json:"label,omitempty"`    // a friendly name: "Temperature"
	Unit     string   `json:"unit,omitempty"`     // "°C"
	Decimals *int     `json:"decimals,omitempty"` // digits after the point
	Min      *float64 `json:"min,omitempty"`      // the y axis' fixed low end
	Max      *float64 `json:"max,omitempty"`      // and high end
	Updated  int64    `json:"updated"`            // Unix ms
}

// MaxMetricSettings bounds how many metrics have settings.
const MaxMetricSettings = 10000

// Validate checks s; errors wrap ErrInvalid and name the field.
func (s *MetricSetting) Validate() error {
	if s.Metric == "" || len(s.Metric) > maxRuleMetric || !utf8.ValidString(s.Metric) {
		return fmt.Errorf("%w: metric: want a name of 1 to %d bytes", ErrInvalid, maxRuleMetric)
	}
	s.Label, s.Unit = strings.TrimSpace(s.Label), strings.TrimSpace(s.Unit)
	if len(s.Label) > MaxBoardName || !utf8.ValidString(s.Label) {
		return fmt.Errorf("%w: label: at most %d characters", ErrInvalid, MaxBoardName)
	}
	if len(s.Unit) > 32 || !utf8.ValidString(s.Unit) {
		return fmt.Errorf("%w: unit: at most 32 bytes", ErrInvalid)
	}
	if err := checkDisplay(s.Decimals, s.Min, s.Max); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}

// checkDisplay checks display settings shared by metrics and panels.
func checkDisplay(decimals *int, lo, hi *float64) error {
	if decimals != nil && (*decimals < 0 || *decimals > 10) {
		return fmt.Errorf("decimals: want 0 to 10")
	}
	if lo != nil && !finite(*lo) || hi != nil && !finite(*hi) || lo != nil && hi != nil && *lo >= *hi {
		return fmt.Errorf("min and max: finite, min below max")
	}
	return nil
}

// MetricSettingStore keeps the metrics' display settings.
type MetricSettingStore interface {
	// MetricSettings lists every metric's settings, by name.
	MetricSettings(ctx context.Context) ([]MetricSetting, error)
	// SetMetricSetting stores s in place of the metric's settings;
	// DeleteMetricSetting removes them (ErrNotFound when there were none).
	SetMetricSetting(ctx context.Context, s MetricSetting) error
	DeleteMetricSetting(ctx context.Context, metric string) error
}
