package dashboard

import (
	"encoding/json"
	"net/url"
	"sort"
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

// Limits of GET /api/v1/devices.
const (
	DefaultDeviceLimit = 100
	MaxDeviceLimit     = 1000
)

// handleListDevices serves GET /api/v1/devices?prefix=&limit=&cursor=:
// devices ordered by id, {"devices":[...],"more":bool,"next":url}.
func (s *Server) handleListDevices(c *fiber.Ctx) error {
	limit, err := intParam("limit", c.Query("limit"), DefaultDeviceLimit, 1, MaxDeviceLimit)
	if err != nil {
		return err
	}
	prefix := c.Query("prefix")
	after := ""
	if v := c.Query("cursor"); v != "" {
		cur, err := decodeCursor(v)
		if err != nil || cur.Name == "" {
			return invalid("cursor", "not a device listing cursor")
		}
		after = cur.Name
	}
	list, err := s.Messages.ListDevices(c.UserContext())
	if err != nil {
		return err
	}
	out := make([]*devices.Device, 0, min(int(limit), len(list)))
	more := false
	for _, d := range list {
		if !strings.HasPrefix(d.ID, prefix) || d.ID <= after {
			continue
		}
		if len(out) == int(limit) {
			more = true
			break
		}
		out = append(out, d)
	}
	body := fiber.Map{"devices": out, "more": more}
	if more {
		next := nextURL(c, cursor{Name: out[len(out)-1].ID})
		body["next"] = next
		c.Set(fiber.HeaderLink, "<"+next+`>; rel="next"`)
	}
	return c.JSON(body)
}

// nextURL is the request's own URL with cursor replaced.
func nextURL(c *fiber.Ctx, cur cursor) string {
	q := url.Values{}
	c.Context().QueryArgs().VisitAll(func(k, v []byte) {
		if string(k) != "cursor" {
			q.Add(string(k), string(v))
		}
	})
	q.Set("cursor", cur.encode())
	return c.Path() + "?" + q.Encode()
}

// findDevice returns the device named by the {id} path parameter.
func (s *Server) findDevice(c *fiber.Ctx) (*devices.Device, error) {
	id, err := deviceParam(c)
	if err != nil {
		return nil, err
	}
	return s.Messages.FindDevice(c.UserContext(), id)
}

func (s *Server) handleGetDevice(c *fiber.Ctx) error {
	d, err := s.findDevice(c)
	if err != nil {
		return err
	}
	return c.JSON(d)
}

func (s *Server) handleLatest(c *fiber.Ctx) error {
	d, err := s.findDevice(c)
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"device": d.ID, "latest": d.Latest})
}

func (s *Server) handleDeviceKeys(c *fiber.Ctx) error {
	d, err := s.findDevice(c)
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"device": d.ID, "keys": sortedKeys(d.Latest)})
}

// handleKeys serves GET /api/v1/metrics/keys: every metric name of every device.
func (s *Server) handleKeys(c *fiber.Ctx) error {
	list, err := s.Messages.ListDevices(c.UserContext())
	if err != nil {
		return err
	}
	all := map[string]devices.Latest{}
	for _, d := range list {
		for k, v := range d.Latest {
			all[k] = v
		}
	}
	return c.JSON(fiber.Map{"keys": sortedKeys(all)})
}

func sortedKeys(m map[string]devices.Latest) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// deviceParam reads the {id} path parameter. It is unescaped, so that the
// devices "." and ".." can be named as %2E and %2E%2E (clients and browsers
// drop dot segments from paths); device ids never hold '%'.
func deviceParam(c *fiber.Ctx) (string, error) {
	id, err := url.PathUnescape(c.Params("id"))
	if err != nil {
		return "", invalid("id", "not a valid path segment")
	}
	id = utils.CopyString(id)
	if err := devices.ValidateDeviceID(id); err != nil {
		return "", invalid("id", "%s", strings.TrimPrefix(err.Error(), devices.ErrInvalid.Error()+": "))
	}
	return id, nil
}

// handleListMessages serves GET /api/v1/devices/{id}/messages?from=&to=&limit=&order=&cursor=.
// The response is {"messages":[...],"more":bool,"next":url}: "more" tells
// that more messages match than were returned, and "next" (also in a Link
// header) fetches them, by keyset, never by offset.
func (s *Server) handleListMessages(c *fiber.Ctx) error {
	id, err := deviceParam(c)
	if err != nil {
		return err
	}
	f := devices.MessageFilter{Device: id, Desc: true}
	if f.From, f.To, err = timeRange(c); err != nil {
		return err
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
	switch t := c.Query("time", "ts"); t {
	case "ts":
	case "received":
		f.ByReceived = true
	default:
		return invalid("time", "want ts or received, got %q", t)
	}
	if v := c.Query("cursor"); v != "" {
		cur, err := decodeCursor(v)
		if err != nil || cur.Name != "" || cur.Seq == 0 {
			return invalid("cursor", "not a message listing cursor")
		}
		if cur.Desc != f.Desc || cur.Received != f.ByReceived {
			return invalid("cursor", "was issued for another order or time")
		}
		f.After = cur.position()
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
		last := msgs[len(msgs)-1]
		next := nextURL(c, cursor{Desc: f.Desc, TS: last.TS, Seq: int64(last.Seq), Received: f.ByReceived})
		c.Set(fiber.HeaderLink, "<"+next+`>; rel="next"`)
		b = append(b, `true,"next":`...)
		nb, _ := json.Marshal(next)
		b = append(append(b, nb...), '}')
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
