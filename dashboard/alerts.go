package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"

	"github.com/gofiber/fiber/v2"

	"github.com/telehub/telehub/devices"
)

// AlertService keeps alert rules and alerts; alerts.Engine implements it.
type AlertService interface {
	CreateRule(ctx context.Context, r devices.Rule) (*devices.Rule, error)
	UpdateRule(ctx context.Context, r devices.Rule) (*devices.Rule, error)
	DeleteRule(ctx context.Context, id int64) error
	Rule(ctx context.Context, id int64) (*devices.Rule, error)
	Rules(ctx context.Context) ([]devices.Rule, error)
	Alert(ctx context.Context, id int64) (*devices.Alert, error)
	ListAlerts(ctx context.Context, f devices.AlertFilter) ([]devices.Alert, error)
	Ack(ctx context.Context, id int64, by, note string) (*devices.Alert, error)
	Clear(ctx context.Context, id int64, by, note string) (*devices.Alert, error)
}

func (s *Server) alertRoutes(api fiber.Router) {
	api.Get("/rules", s.alertsOn, s.handleListRules)
	api.Post("/rules", s.alertsOn, s.handleCreateRule)
	api.Get("/rules/:rule", s.alertsOn, s.handleGetRule)
	api.Put("/rules/:rule", s.alertsOn, s.handleUpdateRule)
	api.Delete("/rules/:rule", s.alertsOn, s.handleDeleteRule)
	api.Get("/alerts", s.alertsOn, s.handleListAlerts)
	api.Get("/alerts/webhook-secret", s.alertsOn, s.handleWebhookSecret)
	api.Get("/alerts/:alert", s.alertsOn, s.handleGetAlert)
	api.Post("/alerts/:alert/ack", s.alertsOn, s.handleAlertChange(true))
	api.Post("/alerts/:alert/clear", s.alertsOn, s.handleAlertChange(false))
	api.Get("/devices/:id/alerts", s.alertsOn, s.handleListAlerts)
}

func (s *Server) alertsOn(c *fiber.Ctx) error {
	if s.Alerts == nil {
		return fiber.NewError(fiber.StatusNotImplemented, "alerts are not available")
	}
	return c.Next()
}

// ruleBody reads a rule from the request body: unknown fields are refused
// (a typo would otherwise make a rule that never fires).
func ruleBody(c *fiber.Ctx) (devices.Rule, error) {
	var r devices.Rule
	dec := json.NewDecoder(bytes.NewReader(c.Body()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, invalid("body", `send a rule such as {"name":"hot","device":"kitchen","metric":"temp","op":">","value":30,"for":"1m","severity":"major"}: %v`, err)
	}
	return r, nil
}

// handleListRules serves GET /api/v1/rules: {"rules":[...]}.
func (s *Server) handleListRules(c *fiber.Ctx) error {
	list, err := s.Alerts.Rules(c.UserContext())
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"rules": list})
}

// handleCreateRule serves POST /api/v1/rules (admin): 201 with the rule.
func (s *Server) handleCreateRule(c *fiber.Ctx) error {
	r, err := ruleBody(c)
	if err != nil {
		return err
	}
	out, err := s.Alerts.CreateRule(c.UserContext(), r)
	if err != nil {
		return err
	}
	c.Location("/api/v1/rules/" + strconv.FormatInt(out.ID, 10))
	return c.Status(fiber.StatusCreated).JSON(out)
}

func (s *Server) handleGetRule(c *fiber.Ctx) error {
	id, err := idParam(c, "rule")
	if err != nil {
		return err
	}
	r, err := s.Alerts.Rule(c.UserContext(), id)
	if err != nil {
		return err
	}
	return c.JSON(r)
}

// handleUpdateRule serves PUT /api/v1/rules/{id} (admin): the whole rule.
func (s *Server) handleUpdateRule(c *fiber.Ctx) error {
	id, err := idParam(c, "rule")
	if err != nil {
		return err
	}
	r, err := ruleBody(c)
	if err != nil {
		return err
	}
	r.ID = id
	out, err := s.Alerts.UpdateRule(c.UserContext(), r)
	if err != nil {
		return err
	}
	return c.JSON(out)
}

func (s *Server) handleDeleteRule(c *fiber.Ctx) error {
	id, err := idParam(c, "rule")
	if err != nil {
		return err
	}
	if err := s.Alerts.DeleteRule(c.UserContext(), id); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// handleListAlerts serves GET /api/v1/alerts and /api/v1/devices/{id}/alerts
// ?status=active|acknowledged|cleared|open&severity=&device=&rule=&limit=&before=:
// {"alerts":[...],"next":url}, newest first, by keyset.
func (s *Server) handleListAlerts(c *fiber.Ctx) error {
	f := devices.AlertFilter{Limit: 100}
	var err error
	base := "/api/v1/alerts"
	if c.Params("id") != "" {
		if f.Device, err = deviceParam(c); err != nil {
			return err
		}
		base = "/api/v1/devices/" + f.Device + "/alerts"
	} else if v := c.Query("device"); v != "" {
		if err := devices.ValidateDeviceID(v); err != nil {
			return invalid("device", "%v", err)
		}
		f.Device = v
	}
	if v := c.Query("status"); v != "" {
		if f.Status, err = devices.ParseAlertStatus(v); err != nil {
			return invalid("status", "want active, acknowledged, cleared or open")
		}
	}
	if v := c.Query("severity"); v != "" {
		if f.Severity, err = devices.ParseSeverity(v); err != nil {
			return invalid("severity", "want critical, major, minor, warning or info")
		}
	}
	if v := c.Query("rule"); v != "" {
		if f.RuleID, err = strconv.ParseInt(v, 10, 64); err != nil || f.RuleID < 1 {
			return invalid("rule", "want a rule id")
		}
	}
	if v := c.Query("limit"); v != "" {
		if f.Limit, err = strconv.Atoi(v); err != nil || f.Limit < 1 || f.Limit > devices.MaxAlertList {
			return invalid("limit", "want 1..%d", devices.MaxAlertList)
		}
	}
	if v := c.Query("before"); v != "" {
		if f.Before, err = strconv.ParseInt(v, 10, 64); err != nil || f.Before < 1 {
			return invalid("before", "want an alert id")
		}
	}
	list, err := s.Alerts.ListAlerts(c.UserContext(), f)
	if err != nil {
		return err
	}
	var next *string
	if len(list) == f.Limit {
		q := c.Request().URI().QueryArgs()
		args := fiber.AcquireArgs()
		defer fiber.ReleaseArgs(args)
		q.CopyTo(args)
		args.Set("before", strconv.FormatInt(list[len(list)-1].ID, 10))
		u := base + "?" + args.String()
		next = &u
	}
	return c.JSON(fiber.Map{"alerts": list, "next": next})
}

func (s *Server) handleGetAlert(c *fiber.Ctx) error {
	id, err := idParam(c, "alert")
	if err != nil {
		return err
	}
	a, err := s.Alerts.Alert(c.UserContext(), id)
	if err != nil {
		return err
	}
	return c.JSON(a)
}

// handleAlertChange serves POST /api/v1/alerts/{id}/ack and .../clear
// (admin), with an optional body {"by":"alice","note":"on it"}.
func (s *Server) handleAlertChange(ack bool) fiber.Handler {
	return func(c *fiber.Ctx) error {
		id, err := idParam(c, "alert")
		if err != nil {
			return err
		}
		var body struct {
			By   string `json:"by"`
			Note string `json:"note"`
		}
		if len(bytes.TrimSpace(c.Body())) > 0 {
			if err := json.Unmarshal(c.Body(), &body); err != nil {
				return invalid("body", `send {"by":"name","note":"text"} or nothing`)
			}
		}
		if len(body.By) > 200 || len(body.Note) > 2000 {
			return invalid("body", "by: at most 200 bytes; note: at most 2000")
		}
		if body.By == "" {
			body.By = "dashboard"
		}
		change := s.Alerts.Clear
		if ack {
			change = s.Alerts.Ack
		}
		a, err := change(c.UserContext(), id, body.By, body.Note)
		if err != nil {
			return err
		}
		return c.JSON(a)
	}
}

// handleWebhookSecret serves GET /api/v1/alerts/webhook-secret (admin):
// the key that signs webhook requests, for setting up receivers.
func (s *Server) handleWebhookSecret(c *fiber.Ctx) error {
	if scope, _ := c.Locals("scope").(devices.Scope); s.authRequired(c.UserContext()) && scope != devices.ScopeAdmin {
		return errorf(devices.ErrForbidden, "the webhook secret needs an admin token")
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(fiber.Map{"secret": s.WebhookSecret, "header": "X-Telehub-Signature", "scheme": "t={unix seconds},v1={hex HMAC-SHA256 of \"{t}.{body}\"}"})
}

// idParam reads a positive integer path parameter.
func idParam(c *fiber.Ctx, name string) (int64, error) {
	n, err := strconv.ParseInt(c.Params(name), 10, 64)
	if err != nil || n < 1 {
		return 0, invalid(name, "want a positive integer id")
	}
	return n, nil
}
