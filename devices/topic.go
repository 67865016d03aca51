package devices

import (
	"fmt"
	"strings"
)

// DeviceParam is the placeholder that marks the device id's level in a topic pattern.
const DeviceParam = "{device}"

// Default topic patterns.
const (
	DefaultTelemetryPattern = "devices/{device}/telemetry"
	DefaultStatusPattern    = "devices/{device}/status"
)

// Scheme maps MQTT topics to devices. Each pattern is a topic with exactly one
// level that is DeviceParam, for example "devices/{device}/telemetry" or
// "site/{device}/up". Build one with NewScheme; the zero value matches nothing.
type Scheme struct {
	telemetry, status pattern
}

type pattern struct {
	levels []string // "" marks the device level
	at     int
	raw    string
}

// DefaultScheme returns the scheme of DefaultTelemetryPattern and DefaultStatusPattern.
func DefaultScheme() *Scheme {
	s, err := NewScheme(DefaultTelemetryPattern, DefaultStatusPattern)
	if err != nil {
		panic(err) // the defaults are constants
	}
	return s
}

// NewScheme parses the telemetry and status patterns. The status pattern may
// be empty (no status topic). It returns an error wrapping ErrInvalid when a
// pattern has no or several {device} levels, a wildcard, or an empty level.
func NewScheme(telemetry, status string) (*Scheme, error) {
	t, err := parsePattern(telemetry)
	if err != nil {
		return nil, fmt.Errorf("telemetry topic pattern: %w", err)
	}
	s := &Scheme{telemetry: t}
	if status != "" {
		if s.status, err = parsePattern(status); err != nil {
			return nil, fmt.Errorf("status topic pattern: %w", err)
		}
		if s.status.raw == s.telemetry.raw {
			return nil, fmt.Errorf("%w: status and telemetry topic patterns are the same", ErrInvalid)
		}
	}
	return s, nil
}

func parsePattern(p string) (pattern, error) {
	levels := strings.Split(p, "/")
	pt := pattern{levels: levels, at: -1, raw: p}
	for i, l := range levels {
		switch {
		case l == DeviceParam:
			if pt.at >= 0 {
				return pattern{}, fmt.Errorf("%w: %q has more than one %s", ErrInvalid, p, DeviceParam)
			}
			pt.at = i
			levels[i] = ""
		case l == "":
			return pattern{}, fmt.Errorf("%w: %q has an empty level", ErrInvalid, p)
		case strings.ContainsAny(l, "+#{}") || strings.ContainsRune(l, 0):
			return pattern{}, fmt.Errorf("%w: %q level %q has a wildcard or brace", ErrInvalid, p, l)
		}
	}
	if pt.at < 0 {
		return pattern{}, fmt.Errorf("%w: %q has no %s level", ErrInvalid, p, DeviceParam)
	}
	return pt, nil
}

// match returns the device level of topic and whether every other level matched.
func (p *pattern) match(topic string) (string, bool) {
	if p.levels == nil {
		return "", false
	}
	dev := ""
	for i, want := range p.levels {
		var level string
		if j := strings.IndexByte(topic, '/'); j >= 0 {
			level, topic = topic[:j], topic[j+1:]
		} else {
			level, topic = topic, ""
			if i != len(p.levels)-1 {
				return "", false
			}
		}
		if i == p.at {
			dev = level
		} else if level != want {
			return "", false
		}
		if i == len(p.levels)-1 && topic != "" {
			return "", false
		}
	}
	return dev, true
}

func (p *pattern) topic(device string) string {
	return strings.Replace(p.raw, DeviceParam, device, 1)
}

func (p *pattern) filter() string {
	return strings.Replace(p.raw, DeviceParam, "+", 1)
}

// ParseTopic returns the device id and kind of an MQTT topic. ok is false when
// the topic is not one of the scheme's (the hub does not store it; it is
// ordinary broker traffic). When the topic has the scheme's shape but its
// device level is not a valid device id, ParseTopic returns ok true and an
// error wrapping ErrInvalid: such a publish is refused and counted.
func (s *Scheme) ParseTopic(topic string) (device string, kind Kind, ok bool, err error) {
	if d, m := s.telemetry.match(topic); m {
		device, kind = d, KindTelemetry
	} else if d, m := s.status.match(topic); m {
		device, kind = d, KindStatus
	} else {
		return "", 0, false, nil
	}
	if err := ValidateDeviceID(device); err != nil {
		return "", 0, true, fmt.Errorf("topic %q: %w", topic, err)
	}
	return device, kind, true, nil
}

// Topic returns the topic on which device publishes messages of kind.
func (s *Scheme) Topic(device string, kind Kind) string {
	if kind == KindStatus {
		return s.status.topic(device)
	}
	return s.telemetry.topic(device)
}

// Filters returns the MQTT subscription filters that cover the scheme, with
// "+" at the device level.
func (s *Scheme) Filters() []string {
	f := []string{s.telemetry.filter()}
	if s.status.levels != nil {
		f = append(f, s.status.filter())
	}
	return f
}
