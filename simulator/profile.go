package simulator

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// Profile generates one device's readings. Implementations are not safe for
// concurrent use; each device has its own.
type Profile interface {
	// Values returns the metrics of the reading taken at t.
	Values(t time.Time) map[string]any
}

// Profiles lists the built-in profile names.
var Profiles = []string{"thermostat", "tracker", "meter", "custom"}

// NewProfile returns the profile name for one device, with its own random
// source (seeded from the fleet seed and the device index, so that a fleet is
// reproducible). template is used by "custom" only.
func NewProfile(name string, rng *rand.Rand, template string) (Profile, error) {
	switch name {
	case "thermostat":
		return &thermostat{rng: rng, offset: rng.Float64()*2 - 1}, nil
	case "tracker":
		return &tracker{rng: rng, lat: 52.37 + rng.Float64()*0.1, lon: 4.89 + rng.Float64()*0.1, heading: rng.Float64() * 360, battery: 60 + rng.Float64()*40}, nil
	case "meter":
		return &meter{rng: rng, base: 200 + rng.Float64()*400, energy: rng.Float64() * 10000}, nil
	case "custom":
		t, err := ParseTemplate(template)
		if err != nil {
			return nil, err
		}
		return &custom{t: t, rng: rng}, nil
	default:
		return nil, fmt.Errorf("unknown profile %q (want one of %s)", name, strings.Join(Profiles, ", "))
	}
}

// dayPhase is the time of day as an angle: 0 at midnight, 2π at the next.
func dayPhase(t time.Time) float64 {
	h := float64(t.Hour()) + float64(t.Minute())/60 + float64(t.Second())/3600
	return 2 * math.Pi * h / 24
}

func clamp(v, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, v)) }

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

// thermostat: indoor temperature and humidity following a daily cycle
// (warmest mid-afternoon) plus noise.
type thermostat struct {
	rng    *rand.Rand
	offset float64
}

func (p *thermostat) Values(t time.Time) map[string]any {
	cycle := math.Sin(dayPhase(t) - math.Pi*3/4) // peaks around 15:00
	temp := 21 + p.offset + 2.5*cycle + p.rng.NormFloat64()*0.2
	hum := 45 - 8*cycle + p.rng.NormFloat64()*1.5
	return map[string]any{"temp": round(clamp(temp, 5, 35), 2), "hum": round(clamp(hum, 0, 100), 1)}
}

// tracker: a vehicle moving at up to 60 km/h with a slowly turning heading
// and a draining battery.
type tracker struct {
	rng      *rand.Rand
	lat, lon float64
	heading  float64
	battery  float64
	speedKMH float64
	clock    stepClock
}

// stepClock measures the time between a profile's readings: 1 s before the
// first, at most an hour.
type stepClock struct {
	last time.Time
	ok   bool
}

func (c *stepClock) step(t time.Time) float64 {
	dt := 1.0
	if c.ok {
		dt = clamp(t.Sub(c.last).Seconds(), 0, 3600)
	}
	c.last, c.ok = t, true
	return dt
}

func (p *tracker) Values(t time.Time) map[string]any {
	dt := p.clock.step(t)
	p.speedKMH = clamp(p.speedKMH+p.rng.NormFloat64()*5, 0, 60)
	p.heading = math.Mod(p.heading+p.rng.NormFloat64()*10+360, 360)
	km := p.speedKMH * dt / 3600
	rad := p.heading * math.Pi / 180
	p.lat = clamp(p.lat+km/111*math.Cos(rad), -89, 89)
	p.lon = math.Mod(p.lon+km/(111*math.Cos(p.lat*math.Pi/180))*math.Sin(rad)+540, 360) - 180
	p.battery = clamp(p.battery-0.002*dt-p.rng.Float64()*0.01, 0, 100)
	return map[string]any{
		"lat": round(p.lat, 6), "lon": round(p.lon, 6),
		"speed": round(p.speedKMH, 1), "heading": round(p.heading, 0), "battery": round(p.battery, 2),
	}
}

// meter: an electricity meter with power following a daily pattern and a
// cumulative energy counter that never decreases.
type meter struct {
	rng    *rand.Rand
	base   float64
	energy float64 // kWh
	clock  stepClock
}

func (p *meter) Values(t time.Time) map[string]any {
	dt := p.clock.step(t)
	evening := math.Max(0, math.Sin(dayPhase(t)-math.Pi)) // peak around 18:00
	power := clamp(p.base*(1+evening)+p.rng.NormFloat64()*30, 0, 10000)
	p.energy += power * dt / 3600 / 1000
	return map[string]any{"power": round(power, 1), "energy": round(p.energy, 4), "voltage": round(230+p.rng.NormFloat64()*2, 1)}
}

// custom renders a user template.
type custom struct {
	t   *Template
	rng *rand.Rand
}

func (p *custom) Values(time.Time) map[string]any { return nil }

// Template is a payload template with placeholders:
//
//	{{device}}        the device id (JSON-escaped, without quotes)
//	{{seq}}           the device's message sequence number, from 1
//	{{ts}}            the send time, Unix ms
//	{{rand}}          a random number in [0, 1)
//	{{rand A B}}      a random number in [A, B), two decimals
//	{{randint A B}}   a random integer in [A, B]
//
// Anything else is copied as is. Example:
//
//	{"t":{{rand 18 25}},"id":"{{device}}","n":{{seq}},"ts":{{ts}}}
type Template struct {
	parts []tmplPart
}

type tmplPart struct {
	lit  string
	kind string // "", "device", "seq", "ts", "rand", "randf", "randint"
	a, b float64
}

// ParseTemplate parses a template; it fails on an unknown or malformed
// placeholder or an unclosed "{{".
func ParseTemplate(s string) (*Template, error) {
	if s == "" {
		return nil, fmt.Errorf("custom profile needs a template (--template)")
	}
	t := &Template{}
	for len(s) > 0 {
		i := strings.Index(s, "{{")
		if i < 0 {
			t.parts = append(t.parts, tmplPart{lit: s})
			break
		}
		if i > 0 {
			t.parts = append(t.parts, tmplPart{lit: s[:i]})
		}
		j := strings.Index(s[i:], "}}")
		if j < 0 {
			return nil, fmt.Errorf("template: unclosed {{ at byte %d", i)
		}
		p, err := parsePlaceholder(strings.Fields(s[i+2 : i+j]))
		if err != nil {
			return nil, fmt.Errorf("template: %w", err)
		}
		t.parts = append(t.parts, p)
		s = s[i+j+2:]
	}
	return t, nil
}

func parsePlaceholder(f []string) (tmplPart, error) {
	if len(f) == 0 {
		return tmplPart{}, fmt.Errorf("empty placeholder {{}}")
	}
	name := f[0]
	switch {
	case (name == "device" || name == "seq" || name == "ts") && len(f) == 1:
		return tmplPart{kind: name}, nil
	case name == "rand" && len(f) == 1:
		return tmplPart{kind: "rand", a: 0, b: 1}, nil
	case (name == "rand" || name == "randint") && len(f) == 3:
		a, err1 := strconv.ParseFloat(f[1], 64)
		b, err2 := strconv.ParseFloat(f[2], 64)
		if err1 != nil || err2 != nil || math.IsNaN(a) || math.IsNaN(b) || math.IsInf(a, 0) || math.IsInf(b, 0) || b < a {
			return tmplPart{}, fmt.Errorf("{{%s}}: want two finite numbers A <= B", strings.Join(f, " "))
		}
		kind := "randf"
		if name == "randint" {
			kind = "randint"
			if a != math.Trunc(a) || b != math.Trunc(b) || b-a > 1e15 {
				return tmplPart{}, fmt.Errorf("{{%s}}: want two integers A <= B", strings.Join(f, " "))
			}
		}
		return tmplPart{kind: kind, a: a, b: b}, nil
	default:
		return tmplPart{}, fmt.Errorf("unknown placeholder {{%s}}", strings.Join(f, " "))
	}
}

// Render appends the rendered template to b.
func (t *Template) Render(b []byte, device string, seq uint64, ts time.Time, rng *rand.Rand) []byte {
	for _, p := range t.parts {
		switch p.kind {
		case "":
			b = append(b, p.lit...)
		case "device":
			q := strconv.Quote(device)
			b = append(b, q[1:len(q)-1]...)
		case "seq":
			b = strconv.AppendUint(b, seq, 10)
		case "ts":
			b = strconv.AppendInt(b, ts.UnixMilli(), 10)
		case "rand":
			b = strconv.AppendFloat(b, rng.Float64(), 'f', 4, 64)
		case "randf":
			b = strconv.AppendFloat(b, p.a+rng.Float64()*(p.b-p.a), 'f', 2, 64)
		case "randint":
			b = strconv.AppendInt(b, int64(p.a)+rng.Int64N(int64(p.b-p.a)+1), 10)
		}
	}
	return b
}
