package dashboard

import (
	"math"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"

	"github.com/telehub/telehub/devices"
)

// Limits of GET /api/v1/devices/{id}/messages.
const (
	DefaultMessageLimit = 100
	MaxMessageLimit     = 10000
)

func (s *Server) handleListDevices(c *fiber.Ctx) error {
	list, err := s.Messages.ListDevices(c.UserContext())
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"devices": list})
}

func deviceParam(c *fiber.Ctx) (string, error) {
	id := utils.CopyString(c.Params("id"))
	if err := devices.ValidateDeviceID(id); err != nil {
		return "", invalid("id", "%s", strings.TrimPrefix(err.Error(), devices.ErrInvalid.Error()+": "))
	}
	return id, nil
}

func (s *Server) handleGetDevice(c *fiber.Ctx) error {
	id, err := deviceParam(c)
	if err != nil {
		return err
	}
	d, err := s.Messages.FindDevice(c.UserContext(), id)
	if err != nil {
		return err
	}
	return c.JSON(d)
}

// handleListMessages serves GET /api/v1/devices/{id}/messages?from=&to=&limit=&order=.
// The response is {"messages":[...],"more":bool}; "more" tells that more
// messages match than were returned.
func (s *Server) handleListMessages(c *fiber.Ctx) error {
	id, err := deviceParam(c)
	if err != nil {
		return err
	}
	f := devices.MessageFilter{Device: id, Desc: true}
	for _, p := range []struct {
		name string
		dst  *int64
	}{{"from", &f.From}, {"to", &f.To}} {
		if v := c.Query(p.name); v != "" {
			t, err := ParseTime(v)
			if err != nil {
				return invalid(p.name, "%v", err)
			}
			*p.dst = t
		}
	}
	if f.From != 0 && f.To != 0 && f.From > f.To {
		return invalid("from", "is after \"to\"")
	}
	if f.From == 0 && c.Query("from") != "" {
		f.From = math.MinInt64 + 1 // "from=0" means the epoch, not unbounded
	}
	limit, err := intParam("limit", c.Query("limit"), DefaultMessageLimit, 1, MaxMessageLimit)
	if err != nil {
		return err
	}
	switch o := c.Query("order", "desc"); o {
	case "desc":
	case "asc":
		f.Desc = false
	default:
		return invalid("order", "want asc or desc, got %q", o)
	}
	f.Limit = int(limit) + 1
	msgs, err := s.Messages.ListMessages(c.UserContext(), f)
	if err != nil {
		return err
	}
	more := len(msgs) > int(limit)
	if more {
		msgs = msgs[:limit]
	}
	// Messages marshal themselves (devices.Message.AppendJSON).
	b := make([]byte, 0, 256*len(msgs)+32)
	b = append(b, `{"messages":[`...)
	for i := range msgs {
		if i > 0 {
			b = append(b, ',')
		}
		b = msgs[i].AppendJSON(b)
	}
	b = append(b, `],"more":`...)
	if more {
		b = append(b, "true}"...)
	} else {
		b = append(b, "false}"...)
	}
	c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
	return c.Send(b)
}

func (s *Server) handleStats(c *fiber.Ctx) error {
	return c.JSON(fiber.Map{
		"ingest":            s.Stats.Snapshot(),
		"websocket_clients": s.WSClients(),
		"last_seq":          s.Messages.LastSeq(),
	})
}
