package alerts

import (
	"context"
	"fmt"

	"github.com/telehub/telehub/devices"
)

// The API's side of alerts: rules changed through it reach the evaluator
// at once, and a person's acknowledgement or clear is saved, pushed live
// and notified like the evaluator's own changes.

// CreateRule stores a rule made through the API.
func (e *Engine) CreateRule(ctx context.Context, r devices.Rule) (*devices.Rule, error) {
	now := e.now()
	r.ID, r.Source, r.Created, r.Updated = 0, devices.RuleFromAPI, now, now
	out, err := e.Store.CreateRule(ctx, r)
	if err == nil {
		e.RulesChanged()
	}
	return out, err
}

// UpdateRule replaces a rule made through the API (rules of the rules
// file change in the file: ErrConflict).
func (e *Engine) UpdateRule(ctx context.Context, r devices.Rule) (*devices.Rule, error) {
	old, err := e.apiRule(ctx, r.ID)
	if err != nil {
		return nil, err
	}
	r.Source, r.Created, r.Updated = old.Source, old.Created, max(e.now(), old.Updated+1)
	out, err := e.Store.UpdateRule(ctx, r)
	if err == nil {
		e.RulesChanged()
	}
	return out, err
}

// DeleteRule deletes a rule made through the API, and clears its alerts.
func (e *Engine) DeleteRule(ctx context.Context, id int64) error {
	if _, err := e.apiRule(ctx, id); err != nil {
		return err
	}
	err := e.Store.DeleteRule(ctx, id, e.now())
	if err == nil {
		e.RulesChanged()
	}
	return err
}

func (e *Engine) apiRule(ctx context.Context, id int64) (*devices.Rule, error) {
	r, err := e.Store.Rule(ctx, id)
	if err != nil {
		return nil, err
	}
	if r.Source == devices.RuleFromFile {
		return nil, fmt.Errorf("%w: rule %q comes from the rules file: change it there and reload (SIGHUP)", devices.ErrConflict, r.Name)
	}
	return r, nil
}

// Rule and Rules read the rules.
func (e *Engine) Rule(ctx context.Context, id int64) (*devices.Rule, error) {
	return e.Store.Rule(ctx, id)
}
func (e *Engine) Rules(ctx context.Context) ([]devices.Rule, error) { return e.Store.Rules(ctx) }

// SyncFileRules makes the rules file's rules the stored ones.
func (e *Engine) SyncFileRules(ctx context.Context, rules []devices.Rule) (added, changed, removed int, err error) {
	added, changed, removed, err = e.Store.SyncFileRules(ctx, rules, e.now())
	if err == nil {
		e.RulesChanged()
	}
	return added, changed, removed, err
}

// Alert and ListAlerts read alerts.
func (e *Engine) Alert(ctx context.Context, id int64) (*devices.Alert, error) {
	return e.Store.Alert(ctx, id)
}
func (e *Engine) ListAlerts(ctx context.Context, f devices.AlertFilter) ([]devices.Alert, error) {
	return e.Store.ListAlerts(ctx, f)
}

// Ack acknowledges an open alert for a person.
func (e *Engine) Ack(ctx context.Context, id int64, by, note string) (*devices.Alert, error) {
	a, err := e.Store.AckAlert(ctx, id, by, note, e.now(), e.Receivers, Payload)
	if err != nil {
		return nil, err
	}
	e.changed(a)
	return a, nil
}

// Clear clears an open alert by hand. If its condition still holds, the
// rule raises a new alert at its next trigger.
func (e *Engine) Clear(ctx context.Context, id int64, by, note string) (*devices.Alert, error) {
	a, err := e.Store.ClearAlert(ctx, id, by, note, e.now(), e.Receivers, Payload)
	if err != nil {
		return nil, err
	}
	e.Forget(id)
	e.changed(a)
	return a, nil
}

func (e *Engine) changed(a *devices.Alert) {
	if e.OnChange != nil {
		e.OnChange(*a)
	}
	if e.OnSaved != nil {
		e.OnSaved()
	}
}

func (e *Engine) now() int64 {
	e.init()
	return e.Now().UnixMilli()
}
