package dashboard

import (
	"github.com/gofiber/fiber/v2"

	"github.com/telehub/telehub/devices"
)

func (s *Server) retentionBody(c *fiber.Ctx, id string) error {
	d, own, err := s.Retention.RetentionOf(c.UserContext(), id)
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"device": id, "retention_ms": d.Milliseconds(), "retention": d.String(), "own": own})
}

// handleGetRetention serves GET /api/v1/devices/{id}/retention:
// {"device","retention_ms","retention","own"}; own is false when the hub's
// --retention applies. 0 keeps everything.
func (s *Server) handleGetRetention(c *fiber.Ctx) error {
	if s.Retention == nil {
		return fiber.NewError(fiber.StatusNotImplemented, "retention is not available")
	}
	id, err := deviceParam(c)
	if err != nil {
		return err
	}
	return s.retentionBody(c, id)
}

// handleSetRetention serves PUT /api/v1/devices/{id}/retention
// {"retention":"7d"}: the device's own retention ("0" keeps everything).
func (s *Server) handleSetRetention(c *fiber.Ctx) error {
	if s.Retention == nil {
		return fiber.NewError(fiber.StatusNotImplemented, "retention is not available")
	}
	id, err := deviceParam(c)
	if err != nil {
		return err
	}
	var req struct {
		Retention string `json:"retention"`
	}
	if err := c.BodyParser(&req); err != nil {
		return invalid("retention", `send {"retention":"30d"}`)
	}
	d, err := devices.ParseRetention(req.Retention)
	if err != nil {
		return invalid("retention", "want 0, days (30d), weeks (2w) or a duration such as 36h, got %q", req.Retention)
	}
	if err := s.Retention.SetRetention(c.UserContext(), id, d); err != nil {
		return err
	}
	return s.retentionBody(c, id)
}

// handleClearRetention serves DELETE /api/v1/devices/{id}/retention: the
// device follows the hub's --retention again.
func (s *Server) handleClearRetention(c *fiber.Ctx) error {
	if s.Retention == nil {
		return fiber.NewError(fiber.StatusNotImplemented, "retention is not available")
	}
	id, err := deviceParam(c)
	if err != nil {
		return err
	}
	if err := s.Retention.ClearRetention(c.UserContext(), id); err != nil {
		return err
	}
	return s.retentionBody(c, id)
}

// handleEvents serves GET /api/v1/devices/{id}/events?limit=: the status
// changes the hub observed (connections, silence), newest first.
func (s *Server) handleEvents(c *fiber.Ctx) error {
	if s.Events == nil {
		return fiber.NewError(fiber.StatusNotImplemented, "events are not available")
	}
	id, err := deviceParam(c)
	if err != nil {
		return err
	}
	limit, err := intParam("limit", c.Query("limit"), 100, 1, 1000)
	if err != nil {
		return err
	}
	evs, err := s.Events.StatusEvents(c.UserContext(), id, int(limit))
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"device": id, "events": evs})
}
