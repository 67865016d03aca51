package dashboard

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/telehub/telehub/devices"
)

// CommandService sends commands to devices and follows them;
// devices.Downlink implements it.
type CommandService interface {
	Create(ctx context.Context, device string, r devices.CommandRequest) (*devices.Command, error)
	CreateWait(ctx context.Context, device string, r devices.CommandRequest, wait time.Duration) (*devices.Command, error)
	Cancel(ctx context.Context, device string, id int64) (*devices.Command, error)
	Wait(ctx context.Context, device string, id int64) (*devices.Command, error)
	Command(ctx context.Context, device string, id int64) (*devices.Command, error)
	ListCommands(ctx context.Context, f devices.CommandFilter) ([]devices.Command, error)
}

// maxCommandWait caps ?wait= on POST .../commands.
const maxCommandWait = 60 * time.Second

// handleCreateCommand serves POST /api/v1/devices/{id}/commands (admin):
// {"method":"setInterval","params":{...},"timeout":"30s","oneway":false}.
// It answers 201 with the command; with ?wait=10s, once the command has its
// answer (or is delivered, one way) or the wait ends, whichever is first.
func (s *Server) handleCreateCommand(c *fiber.Ctx) error {
	if s.Commands == nil {
		return fiber.NewError(fiber.StatusNotImplemented, "commands are not available")
	}
	id, err := deviceParam(c)
	if err != nil {
		return err
	}
	var body struct {
		Method  string          `json:"method"`
		Params  json.RawMessage `json:"params"`
		Timeout string          `json:"timeout"`
		Oneway  bool            `json:"oneway"`
	}
	if err := json.Unmarshal(c.Body(), &body); err != nil {
		return invalid("body", `send {"method":"name","params":{...},"timeout":"30s","oneway":false}`)
	}
	r := devices.CommandRequest{Method: body.Method, Params: body.Params, Oneway: body.Oneway}
	if body.Timeout != "" {
		if r.Timeout, err = time.ParseDuration(body.Timeout); err != nil {
			return invalid("timeout", "want a duration such as 30s or 5m, got %q", body.Timeout)
		}
	}
	var wait time.Duration
	if v := c.Query("wait"); v != "" {
		if wait, err = time.ParseDuration(v); err != nil || wait < 0 || wait > maxCommandWait {
			return invalid("wait", "want a duration up to %v, got %q", maxCommandWait, v)
		}
	}
	var cmd *devices.Command
	if wait > 0 {
		cmd, err = s.Commands.CreateWait(c.UserContext(), id, r, wait)
	} else {
		cmd, err = s.Commands.Create(c.UserContext(), id, r)
	}
	if err != nil {
		return err
	}
	c.Location("/api/v1/devices/" + id + "/commands/" + strconv.FormatInt(cmd.ID, 10))
	return c.Status(fiber.StatusCreated).JSON(cmd)
}

// handleListCommands serves GET /api/v1/devices/{id}/commands?status=&limit=&before=:
// {"commands":[...],"next":url}, newest first, by keyset.
func (s *Server) handleListCommands(c *fiber.Ctx) error {
	if s.Commands == nil {
		return fiber.NewError(fiber.StatusNotImplemented, "commands are not available")
	}
	id, err := deviceParam(c)
	if err != nil {
		return err
	}
	f := devices.CommandFilter{Device: id, Limit: 100}
	if v := c.Query("status"); v != "" {
		if f.Status, err = devices.ParseCommandStatus(v); err != nil {
			return invalid("status", "want one of queued, sent, delivered, replied, expired, failed, cancelled")
		}
	}
	if v := c.Query("limit"); v != "" {
		if f.Limit, err = strconv.Atoi(v); err != nil || f.Limit < 1 || f.Limit > 1000 {
			return invalid("limit", "want 1..1000")
		}
	}
	if v := c.Query("before"); v != "" {
		if f.Before, err = strconv.ParseInt(v, 10, 64); err != nil || f.Before < 1 {
			return invalid("before", "want a command id")
		}
	}
	list, err := s.Commands.ListCommands(c.UserContext(), f)
	if err != nil {
		return err
	}
	var next *string
	if len(list) == f.Limit {
		u := "/api/v1/devices/" + id + "/commands?limit=" + strconv.Itoa(f.Limit) + "&before=" + strconv.FormatInt(list[len(list)-1].ID, 10)
		if f.Status != "" {
			u += "&status=" + string(f.Status)
		}
		next = &u
	}
	return c.JSON(fiber.Map{"commands": list, "next": next})
}

// commandParam reads the {cmd} path parameter.
func commandParam(c *fiber.Ctx) (int64, error) {
	n, err := strconv.ParseInt(c.Params("cmd"), 10, 64)
	if err != nil || n < 1 {
		return 0, invalid("cmd", "want a command id")
	}
	return n, nil
}

// commandTarget reads the {id} and {cmd} path parameters of a route on one
// command.
func (s *Server) commandTarget(c *fiber.Ctx) (string, int64, error) {
	if s.Commands == nil {
		return "", 0, fiber.NewError(fiber.StatusNotImplemented, "commands are not available")
	}
	id, err := deviceParam(c)
	if err != nil {
		return "", 0, err
	}
	n, err := commandParam(c)
	return id, n, err
}

// handleGetCommand serves GET /api/v1/devices/{id}/commands/{cmd}.
func (s *Server) handleGetCommand(c *fiber.Ctx) error {
	id, n, err := s.commandTarget(c)
	if err != nil {
		return err
	}
	cmd, err := s.Commands.Command(c.UserContext(), id, n)
	if err != nil {
		return err
	}
	return c.JSON(cmd)
}

// handleCancelCommand serves DELETE /api/v1/devices/{id}/commands/{cmd}
// (admin): the command is cancelled unless it ended already (409).
func (s *Server) handleCancelCommand(c *fiber.Ctx) error {
	id, n, err := s.commandTarget(c)
	if err != nil {
		return err
	}
	cmd, err := s.Commands.Cancel(c.UserContext(), id, n)
	if err != nil {
		return err
	}
	return c.JSON(cmd)
}

// AttributeService reads devices' attributes and sets their shared ones;
// devices.Downlink implements it.
type AttributeService interface {
	Attributes(ctx context.Context, device string) (*devices.Attributes, error)
	AttributeEvents(ctx context.Context, device string, limit int) ([]devices.AttributeEvent, error)
	SetShared(ctx context.Context, device string, set map[string]json.RawMessage, replace bool) (*devices.Attributes, error)
}

// handleGetAttributes serves GET /api/v1/devices/{id}/attributes:
// {"device","shared":{key:{"value","ts"}},"client":{...}}.
func (s *Server) handleGetAttributes(c *fiber.Ctx) error {
	if s.Attributes == nil {
		return fiber.NewError(fiber.StatusNotImplemented, "attributes are not available")
	}
	id, err := deviceParam(c)
	if err != nil {
		return err
	}
	a, err := s.Attributes.Attributes(c.UserContext(), id)
	if err != nil {
		return err
	}
	return c.JSON(a)
}

// handleSetShared serves PUT (replace) and PATCH (merge; null deletes a
// key) /api/v1/devices/{id}/attributes/shared (admin), a JSON object; the
// change goes to the device.
func (s *Server) handleSetShared(c *fiber.Ctx) error {
	if s.Attributes == nil {
		return fiber.NewError(fiber.StatusNotImplemented, "attributes are not available")
	}
	id, err := deviceParam(c)
	if err != nil {
		return err
	}
	set, err := devices.ParseAttributes(c.Body())
	if err != nil {
		return err
	}
	a, err := s.Attributes.SetShared(c.UserContext(), id, set, c.Method() == fiber.MethodPut)
	if err != nil {
		return err
	}
	return c.JSON(a)
}

// handleAttributeHistory serves GET /api/v1/devices/{id}/attributes/history?limit=:
// {"device","events":[{"scope","at","changed"}]}, newest first.
func (s *Server) handleAttributeHistory(c *fiber.Ctx) error {
	if s.Attributes == nil {
		return fiber.NewError(fiber.StatusNotImplemented, "attributes are not available")
	}
	id, err := deviceParam(c)
	if err != nil {
		return err
	}
	limit := 100
	if v := c.Query("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > 1000 {
			return invalid("limit", "want 1..1000")
		}
	}
	ev, err := s.Attributes.AttributeEvents(c.UserContext(), id, limit)
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"device": id, "events": ev})
}
