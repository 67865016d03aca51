package alerts

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/telehub/telehub/devices"
)

// LoadRulesFile reads a rules file: YAML or JSON (JSON is YAML), either a
// list of rules or an object with a "rules" list. Each rule has the fields
// of the API's rules. Errors name the file and the line.
//
//	rules:
//	  - name: hot
//	    device_prefix: kitchen-
//	    metric: temp
//	    op: ">"
//	    value: 30
//	    clear: 28
//	    for: 1m
//	    severity: major
func LoadRulesFile(path string) ([]devices.Rule, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	rules, err := ParseRules(b)
	if err != nil {
		return nil, fmt.Errorf("%s:%w", path, err)
	}
	return rules, nil
}

// ParseRules reads the rules of a rules file (see LoadRulesFile). Errors
// start with the line number and a colon.
func ParseRules(b []byte) ([]devices.Rule, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("1: %v", err)
		}
		return nil, fmt.Errorf("%s", trimYAML(err.Error()))
	}
	if len(doc.Content) == 0 {
		return []devices.Rule{}, nil // empty file: no rules
	}
	list := doc.Content[0]
	if list.Kind == yaml.MappingNode {
		var found *yaml.Node
		for i := 0; i+1 < len(list.Content); i += 2 {
			switch k := list.Content[i]; k.Value {
			case "rules":
				found = list.Content[i+1]
			default:
				return nil, fmt.Errorf("%d: unknown key %q (want rules)", k.Line, k.Value)
			}
		}
		if found == nil {
			return []devices.Rule{}, nil
		}
		list = found
	}
	if list.Kind == yaml.ScalarNode && list.Tag == "!!null" {
		return []devices.Rule{}, nil
	}
	if list.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("%d: want a list of rules", list.Line)
	}
	out := make([]devices.Rule, 0, len(list.Content))
	names := map[string]int{}
	for _, n := range list.Content {
		if n.Kind != yaml.MappingNode {
			return nil, fmt.Errorf("%d: want a rule (name, metric, op, value, ...)", n.Line)
		}
		var fields map[string]any
		if err := n.Decode(&fields); err != nil {
			return nil, fmt.Errorf("%d: %v", n.Line, err)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := n.Content[i]; k.Value == "id" || k.Value == "source" || k.Value == "created" || k.Value == "updated" {
				return nil, fmt.Errorf("%d: %q is set by the hub", k.Line, k.Value)
			}
		}
		j, err := json.Marshal(fields)
		if err != nil {
			return nil, fmt.Errorf("%d: %v", n.Line, err)
		}
		var r devices.Rule
		dec := json.NewDecoder(bytes.NewReader(j))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&r); err != nil {
			return nil, fmt.Errorf("%d: %s", fieldLine(n, err), jsonError(err))
		}
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("%d: %v", n.Line, err)
		}
		if prev, dup := names[r.Name]; dup {
			return nil, fmt.Errorf("%d: rule %q: the name is taken by the rule on line %d", n.Line, r.Name, prev)
		}
		names[r.Name] = n.Line
		out = append(out, r)
	}
	return out, nil
}

// fieldLine finds the line of the field a decoding error is about.
func fieldLine(n *yaml.Node, err error) int {
	var te *json.UnmarshalTypeError
	field := ""
	if errors.As(err, &te) {
		field = te.Field
	} else if _, f, ok := strings.Cut(err.Error(), `unknown field "`); ok {
		field, _, _ = strings.Cut(f, `"`)
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == field {
			return n.Content[i].Line
		}
	}
	return n.Line
}

func jsonError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("%s: want a %s", te.Field, te.Type)
	}
	return err.Error()
}

// trimYAML turns "yaml: line 3: ..." into "3: ...".
func trimYAML(msg string) string {
	if rest, ok := strings.CutPrefix(msg, "yaml: line "); ok {
		return rest
	}
	return "1: " + strings.TrimPrefix(msg, "yaml: ")
}
