package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strconv"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/telehub/telehub/devices"
)

func (s *Server) boardRoutes(api fiber.Router) {
	api.Get("/boards", s.boardsOn, s.handleListBoards)
	api.Post("/boards", s.boardsOn, s.handleCreateBoard)
	api.Get("/boards/:board", s.boardsOn, s.handleGetBoard)
	api.Put("/boards/:board", s.boardsOn, s.handleUpdateBoard)
	api.Delete("/boards/:board", s.boardsOn, s.handleDeleteBoard)
	api.Get("/metric-settings", s.metricSettingsOn, s.handleListMetricSettings)
	api.Put("/metric-settings/:metric", s.metricSettingsOn, s.handleSetMetricSetting)
	api.Delete("/metric-settings/:metric", s.metricSettingsOn, s.handleDeleteMetricSetting)
}

func (s *Server) metricSettingsOn(c *fiber.Ctx) error {
	if s.MetricSettings == nil {
		return fiber.NewError(fiber.StatusNotImplemented, "metric settings are not available")
	}
	return c.Next()
}

func (s *Server) boardsOn(c *fiber.Ctx) error {
	if s.Boards == nil {
		return fiber.NewError(fiber.StatusNotImplemented, "boards are not available")
	}
	return c.Next()
}

// boardBody reads a board: what GET answers imports as it is (its id and
// times are ignored); unknown fields are refused, so a typo in a panel is
// an error instead of a panel that shows nothing.
func boardBody(c *fiber.Ctx) (devices.Board, error) {
	var b devices.Board
	if len(c.Body()) > devices.MaxBoardJSON {
		return b, invalid("body", "a board is at most %d bytes of JSON", devices.MaxBoardJSON)
	}
	dec := json.NewDecoder(bytes.NewReader(c.Body()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return b, invalid("body", `send a board such as {"name":"Kitchen","panels":[{"kind":"timeseries","series":[{"device":"k-1","metric":"temp"}]}]}: %v`, err)
	}
	return b, nil
}

// fleetMade is the hub setting that records that the Fleet board was made,
// so that a user who deletes it does not get it back.
const fleetMade = "boards.fleet_made"

// settings keeps small named values of the hub (the stores implement it).
type settings interface {
	Setting(ctx context.Context, name string) (string, error)
	SetSetting(ctx context.Context, name, value string) error
}

// handleListBoards serves GET /api/v1/boards: {"boards":[...]}, by name. A
// hub with devices that never had a board gets its Fleet board first
// (devices.FleetBoard), stored like any other; once, so a user may delete
// it.
func (s *Server) handleListBoards(c *fiber.Ctx) error {
	ctx := c.UserContext()
	list, err := s.Boards.Boards(ctx)
	if err != nil {
		return err
	}
	st, _ := s.Boards.(settings)
	if len(list) == 0 && st != nil {
		if made, err := st.Setting(ctx, fleetMade); err != nil || made != "" {
			return c.JSON(fiber.Map{"boards": list})
		}
	}
	if len(list) == 0 {
		devs, err := s.Messages.ListDevices(ctx)
		if err != nil {
			return err
		}
		if len(devs) > 0 {
			now := time.Now().UnixMilli()
			if _, err := s.Boards.CreateBoard(ctx, devices.FleetBoard(devs, now)); err != nil && !errors.Is(err, devices.ErrConflict) {
				return err
			}
			if st != nil {
				if err := st.SetSetting(ctx, fleetMade, "1"); err != nil {
					return err
				}
			}
			if list, err = s.Boards.Boards(ctx); err != nil {
				return err
			}
		}
	}
	return c.JSON(fiber.Map{"boards": list})
}

// handleCreateBoard serves POST /api/v1/boards (admin): 201 with the board.
// It is also the import: POST what GET /api/v1/boards/{id} answered.
func (s *Server) handleCreateBoard(c *fiber.Ctx) error {
	b, err := boardBody(c)
	if err != nil {
		return err
	}
	now := time.Now().UnixMilli()
	b.ID, b.Created, b.Updated = 0, now, now
	out, err := s.Boards.CreateBoard(c.UserContext(), b)
	if err != nil {
		return err
	}
	c.Location("/api/v1/boards/" + strconv.FormatInt(out.ID, 10))
	return c.Status(fiber.StatusCreated).JSON(out)
}

func (s *Server) handleGetBoard(c *fiber.Ctx) error {
	id, err := idParam(c, "board")
	if err != nil {
		return err
	}
	b, err := s.Boards.Board(c.UserContext(), id)
	if err != nil {
		return err
	}
	return c.JSON(b)
}

// handleUpdateBoard serves PUT /api/v1/boards/{id} (admin): the whole board.
func (s *Server) handleUpdateBoard(c *fiber.Ctx) error {
	id, err := idParam(c, "board")
	if err != nil {
		return err
	}
	b, err := boardBody(c)
	if err != nil {
		return err
	}
	b.ID, b.Updated = id, time.Now().UnixMilli()
	out, err := s.Boards.UpdateBoard(c.UserContext(), b)
	if err != nil {
		return err
	}
	return c.JSON(out)
}

func (s *Server) handleDeleteBoard(c *fiber.Ctx) error {
	id, err := idParam(c, "board")
	if err != nil {
		return err
	}
	if err := s.Boards.DeleteBoard(c.UserContext(), id); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// handleListMetricSettings serves GET /api/v1/metric-settings:
// {"metrics":[...]}, by name: how each metric is shown on every chart.
func (s *Server) handleListMetricSettings(c *fiber.Ctx) error {
	list, err := s.MetricSettings.MetricSettings(c.UserContext())
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"metrics": list})
}

// metricParam reads the {metric} path parameter, unescaped (a metric name
// may hold any character, '/' and '%' too).
func metricParam(c *fiber.Ctx) (string, error) {
	m, err := url.PathUnescape(c.Params("metric"))
	if err != nil || m == "" {
		return "", invalid("metric", "want a metric name, escaped as a path segment")
	}
	return m, nil
}

// handleSetMetricSetting serves PUT /api/v1/metric-settings/{metric}
// (admin): {"label":..,"unit":..,"decimals":..,"min":..,"max":..}, all
// optional, in place of what was set before. 200 with the settings.
func (s *Server) handleSetMetricSetting(c *fiber.Ctx) error {
	metric, err := metricParam(c)
	if err != nil {
		return err
	}
	var m devices.MetricSetting
	dec := json.NewDecoder(bytes.NewReader(c.Body()))
	dec.DisallowUnknownFields()
	if len(c.Body()) > 4096 {
		return invalid("body", "at most 4096 bytes")
	}
	if err := dec.Decode(&m); err != nil {
		return invalid("body", `send settings such as {"label":"Temperature","unit":"°C","decimals":1,"min":-20,"max":50}: %v`, err)
	}
	if m.Metric != "" && m.Metric != metric {
		return invalid("metric", "the body names metric %q, the path %q", m.Metric, metric)
	}
	m.Metric, m.Updated = metric, time.Now().UnixMilli()
	if err := s.MetricSettings.SetMetricSetting(c.UserContext(), m); err != nil {
		return err
	}
	return c.JSON(m)
}

func (s *Server) handleDeleteMetricSetting(c *fiber.Ctx) error {
	metric, err := metricParam(c)
	if err != nil {
		return err
	}
	if err := s.MetricSettings.DeleteMetricSetting(c.UserContext(), metric); err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}
