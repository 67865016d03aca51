package simulator

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestProfiles_Plausible(t *testing.T) {
	start := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	for _, name := range []string{"thermostat", "tracker", "meter"} {
		t.Run(name, func(t *testing.T) {
			p, err := NewProfile(name, rand.New(rand.NewPCG(42, 0)), "")
			if err != nil {
				t.Fatal(err)
			}
			var prev map[string]any
			for i := 0; i < 48*3600; i += 60 { // two days, a reading a minute
				v := p.Values(start.Add(time.Duration(i) * time.Second))
				num := func(k string) float64 { return v[k].(float64) }
				switch name {
				case "thermostat":
					if num("temp") < 5 || num("temp") > 35 || num("hum") < 0 || num("hum") > 100 {
						t.Fatalf("reading %v out of bounds", v)
					}
				case "tracker":
					if num("lat") < -90 || num("lat") > 90 || num("lon") < -180 || num("lon") > 180 ||
						num("speed") < 0 || num("speed") > 60 || num("battery") < 0 || num("battery") > 100 {
						t.Fatalf("reading %v out of bounds", v)
					}
					if prev != nil && num("battery") > prev["battery"].(float64) {
						t.Fatalf("battery rose from %v to %v", prev["battery"], v["battery"])
					}
				case "meter":
					if num("power") < 0 || num("voltage") < 200 || num("voltage") > 260 {
						t.Fatalf("reading %v out of bounds", v)
					}
					if prev != nil && num("energy") < prev["energy"].(float64) {
						t.Fatalf("energy fell from %v to %v", prev["energy"], v["energy"])
					}
				}
				prev = v
			}
		})
	}
	t.Run("thermostat follows the day", func(t *testing.T) {
		p, _ := NewProfile("thermostat", rand.New(rand.NewPCG(1, 1)), "")
		avg := func(hour int) float64 {
			sum := 0.0
			for i := 0; i < 60; i++ {
				sum += p.Values(start.Add(time.Duration(hour)*time.Hour + time.Duration(i)*time.Minute))["temp"].(float64)
			}
			return sum / 60
		}
		if afternoon, night := avg(15), avg(3); afternoon <= night+2 {
			t.Fatalf("15:00 avg %.2f, 03:00 avg %.2f: want the afternoon warmer", afternoon, night)
		}
	})
}

func TestProfiles_Reproducible(t *testing.T) {
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	values := func(seed uint64) []map[string]any {
		p, _ := NewProfile("tracker", rand.New(rand.NewPCG(seed, 7)), "")
		var out []map[string]any
		for i := 0; i < 10; i++ {
			out = append(out, p.Values(at.Add(time.Duration(i)*time.Second)))
		}
		return out
	}
	if !reflect.DeepEqual(values(5), values(5)) {
		t.Fatal("same seed gave different values")
	}
	if reflect.DeepEqual(values(5), values(6)) {
		t.Fatal("different seeds gave the same values")
	}
}

func TestTemplate(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	at := time.UnixMilli(1764489600000)
	tm, err := ParseTemplate(`{"id":"{{device}}","n":{{seq}},"ts":{{ts}},"r":{{rand}},"t":{{rand 18 25}},"k":{{randint 1 3}}}`)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		out := tm.Render(nil, `dev"7`, 42, at, rng)
		var v struct {
			ID      string
			N       int
			TS      int64
			R, T, K float64
		}
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("rendered %s: %v", out, err)
		}
		if v.ID != `dev"7` || v.N != 42 || v.TS != 1764489600000 || v.R < 0 || v.R >= 1 || v.T < 18 || v.T > 25 || v.K < 1 || v.K > 3 || v.K != float64(int(v.K)) {
			t.Fatalf("rendered %s", out)
		}
	}
	for _, bad := range []string{"", "{{", "{{nope}}", "{{rand 3 1}}", "{{randint 1.5 2}}", "{{rand a b}}", "{{}}", "{{seq 1}}"} {
		if _, err := ParseTemplate(bad); err == nil {
			t.Errorf("ParseTemplate(%q) accepted", bad)
		}
	}
}

// FuzzTemplate: parsing never panics; a template that parses renders without
// panicking, and text outside placeholders is copied as is.
func FuzzTemplate(f *testing.F) {
	for _, s := range []string{`{"t":{{rand 18 25}},"seq":{{seq}}}`, "{{device}}", "plain", "{{randint -5 5}}", "{{ts}}{{", "}}{{rand}}"} {
		f.Add(s)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	f.Fuzz(func(t *testing.T, s string) {
		tm, err := ParseTemplate(s)
		if err != nil {
			return
		}
		out := string(tm.Render(nil, "d-1", 1, time.UnixMilli(0), rng))
		if !strings.Contains(s, "{{") && out != s {
			t.Fatalf("no placeholders but output %q differs from %q", out, s)
		}
	})
}

func TestReadCSV(t *testing.T) {
	rows, err := ReadCSV(strings.NewReader("timestamp,device,temp,state,empty\n1764489600000,a,21.5,on,\n2026-11-30T08:00:01Z,b,22,true,\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Device != "a" || rows[0].Values["temp"] != 21.5 || rows[0].Values["state"] != "on" || rows[1].Values["state"] != true {
		t.Fatalf("rows=%+v", rows)
	}
	if _, ok := rows[0].Values["empty"]; ok {
		t.Fatal("empty cell kept")
	}
	for _, bad := range []string{
		"device,temp\na,1\n",          // no timestamp column
		"ts,device\nyesterday,a\n",    // bad time
		"ts,device\n2000,a\n1000,a\n", // out of order
		"ts,device\n1000,bad id\n",    // invalid device id
	} {
		if _, err := ReadCSV(strings.NewReader(bad)); err == nil {
			t.Errorf("ReadCSV(%q) accepted", bad)
		}
	}
}
