package dashboard

import (
	"errors"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"

	"github.com/telehub/telehub/devices"
)

// problem is an RFC 9457 problem details body.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// handleError is the one place where errors become HTTP statuses: domain
// sentinels map to 4xx, Fiber's own errors keep their status, and anything
// else is a 500, logged, with no internals in the body.
func (s *Server) handleError(c *fiber.Ctx, err error) error {
	status, detail := fiber.StatusInternalServerError, "internal error"
	var fe *fiber.Error
	switch {
	case errors.Is(err, devices.ErrInvalid):
		status, detail = fiber.StatusBadRequest, strings.TrimPrefix(err.Error(), devices.ErrInvalid.Error()+": ")
	case errors.Is(err, devices.ErrNotFound):
		status, detail = fiber.StatusNotFound, err.Error()
	case errors.Is(err, devices.ErrTooManyCommands):
		status, detail = fiber.StatusTooManyRequests, err.Error()
	case errors.Is(err, devices.ErrConflict):
		status, detail = fiber.StatusConflict, err.Error()
	case errors.Is(err, devices.ErrUnauthorized):
		status, detail = fiber.StatusUnauthorized, strings.TrimPrefix(err.Error(), devices.ErrUnauthorized.Error()+": ")
	case errors.Is(err, devices.ErrForbidden):
		status, detail = fiber.StatusForbidden, strings.TrimPrefix(err.Error(), devices.ErrForbidden.Error()+": ")
	case errors.As(err, &fe):
		status, detail = fe.Code, fe.Message
	default:
		s.Logger.Error("request failed", "method", c.Method(), "path", c.Path(), "error", err)
	}
	c.Set(fiber.HeaderContentType, "application/problem+json")
	return c.Status(status).JSON(problem{
		Type:   "about:blank",
		Title:  statusText(status),
		Status: status,
		Detail: detail,
	}, "application/problem+json")
}

func statusText(code int) string {
	return utils.StatusMessage(code)
}

// invalid returns an ErrInvalid error naming the parameter.
func invalid(param, format string, args ...any) error {
	return errorf(devices.ErrInvalid, "parameter %q: "+format, append([]any{param}, args...)...)
}
