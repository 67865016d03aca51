package dashboard

import (
	"github.com/gofiber/fiber/v2"
)

// handleDeleteDevice serves DELETE /api/v1/devices/{id}: the device and all
// its messages. {"device":id,"deleted":N}.
func (s *Server) handleDeleteDevice(c *fiber.Ctx) error {
	if s.Deleter == nil {
		return fiber.NewError(fiber.StatusNotImplemented, "deleting is not available")
	}
	id, err := deviceParam(c)
	if err != nil {
		return err
	}
	n, err := s.Deleter.DeleteDevice(c.UserContext(), id)
	if err != nil {
		return err
	}
	s.Logger.Info("device deleted", "device", id, "messages", n)
	return c.JSON(fiber.Map{"device": id, "deleted": n})
}

// handleDeleteMessages serves DELETE /api/v1/devices/{id}/messages?from=&to=:
// the device's messages in the range (all of them without bounds); the
// device stays. {"device":id,"deleted":N}.
func (s *Server) handleDeleteMessages(c *fiber.Ctx) error {
	if s.Deleter == nil {
		return fiber.NewError(fiber.StatusNotImplemented, "deleting is not available")
	}
	id, err := deviceParam(c)
	if err != nil {
		return err
	}
	from, to, err := timeRange(c)
	if err != nil {
		return err
	}
	n, err := s.Deleter.DeleteMessages(c.UserContext(), id, from, to)
	if err != nil {
		return err
	}
	s.Logger.Info("messages deleted", "device", id, "from", from, "to", to, "messages", n)
	return c.JSON(fiber.Map{"device": id, "deleted": n})
}
