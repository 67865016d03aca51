package alerts

import (
	"strings"
	"testing"
	"time"

	"github.com/telehub/telehub/devices"
)

func TestParseRules(t *testing.T) {
	rules, err := ParseRules([]byte(`
rules:
  - name: hot
    device_prefix: kitchen-
    metric: temp
    op: ">"
    value: 30
    clear: 28
    for: 1m
    severity: critical
    webhook: https://example.com/hook
  - name: quiet
    kind: inactivity
    for: 2h
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 2 || rules[0].Kind != devices.RuleThreshold || *rules[0].Clear != 28 || time.Duration(rules[0].For) != time.Minute ||
		rules[1].Severity != devices.SeverityMajor || time.Duration(rules[1].For) != 2*time.Hour {
		t.Fatalf("rules = %+v", rules)
	}
	// JSON is YAML; a bare list works too.
	if rules, err := ParseRules([]byte(`[{"name":"down","kind":"status"}]`)); err != nil || len(rules) != 1 {
		t.Fatalf("JSON list: %+v, %v", rules, err)
	}
	if rules, err := ParseRules(nil); err != nil || len(rules) != 0 {
		t.Fatalf("empty file: %+v, %v", rules, err)
	}
}

func TestParseRules_ErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"rules:\n  - name: a\n    kind: status\n  - name: b\n    metric: t\n    op: '=>'\n    value: 1\n", "4: invalid: rule \"b\": op"},
		{"rules:\n  - name: a\n    kind: status\n    colour: red\n", `4: json: unknown field "colour"`},
		{"rules:\n  - name: a\n    metric: t\n    op: '>'\n    value: warm\n", "5: value: want a float64"},
		{"- name: a\n  kind: status\n- name: a\n  kind: status\n", `3: rule "a": the name is taken by the rule on line 1`},
		{"rules:\n  - name: a\n   kind: status\n", "1: did not find expected '-' indicator"}, // where the YAML parser saw the block start
		{"rulez: []\n", `1: unknown key "rulez"`},
		{"rules:\n  - id: 4\n    name: a\n", `2: "id" is set by the hub`},
		{"rules:\n  - name: q\n    kind: inactivity\n", "2: invalid: rule \"q\": for"},
		{"rules:\n  - name: a\n    kind: status\n    for: soon\n", "2: "},
	} {
		_, err := ParseRules([]byte(tc.src))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to start with %q", tc.src, err, tc.want)
		}
	}
}

func FuzzParseRules(f *testing.F) {
	f.Add([]byte("rules:\n  - name: hot\n    metric: temp\n    op: '>'\n    value: 30\n"))
	f.Add([]byte(`[{"name":"r","kind":"rate","interval":"1m","max":10}]`))
	f.Add([]byte("- name: x\n  kind: inactivity\n  for: 1e300\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rules, err := ParseRules(b)
		if err != nil {
			if !strings.Contains(err.Error(), ":") {
				t.Fatalf("error without a line: %v", err)
			}
			return
		}
		for i := range rules {
			if err := rules[i].Validate(); err != nil {
				t.Fatalf("a parsed rule does not validate: %v", err)
			}
		}
	})
}
