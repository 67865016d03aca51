package dashboard

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/url"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"

	"github.com/telehub/telehub/devices"
)

// tokenCookie carries the API token of a browser that logged in. It is
// HttpOnly (page scripts cannot read it), SameSite=Strict (other sites
// cannot send it) and Secure over HTTPS.
const (
	tokenCookie    = "telehub_token"
	tokenCookieAge = 30 * 24 * time.Hour
)

// authState caches whether any API token exists, so that requests do not
// each ask the database; tokens added by the CLI count within a second.
type authState struct {
	mu      sync.Mutex
	checked time.Time
	has     bool
}

// authRequired reports whether requests need a token: once --api-token is
// set or any token exists.
func (s *Server) authRequired(ctx context.Context) bool {
	if s.APIToken != "" {
		return true
	}
	if s.Credentials == nil {
		return false
	}
	s.auth.mu.Lock()
	defer s.auth.mu.Unlock()
	if time.Since(s.auth.checked) > time.Second {
		has, err := s.Credentials.HasTokens(ctx)
		if err != nil {
			// Fail closed: a database error must not open the API.
			s.Logger.Warn("cannot tell whether API tokens exist; requiring one", "error", err)
			has = true
		}
		s.auth.has, s.auth.checked = has, time.Now()
	}
	return s.auth.has
}

// requestToken returns the token a request carries and whether it came in
// the cookie.
func requestToken(c *fiber.Ctx) (token string, fromCookie bool) {
	if h := c.Get(fiber.HeaderAuthorization); len(h) > 7 && utils.EqualFold(h[:7], "bearer ") {
		return h[7:], false
	}
	if v := c.Cookies(tokenCookie); v != "" {
		return v, true
	}
	return "", false
}

// scopeOf checks a token: the configured admin token (compared in constant
// time) or one from the credential store.
func (s *Server) scopeOf(ctx context.Context, token string) (devices.Scope, error) {
	if token == "" {
		return "", devices.ErrUnauthorized
	}
	if s.APIToken != "" && subtle.ConstantTimeCompare(devices.HashToken(token), devices.HashToken(s.APIToken)) == 1 {
		return devices.ScopeAdmin, nil
	}
	if s.Credentials == nil {
		return "", devices.ErrUnauthorized
	}
	t, err := s.Credentials.AuthenticateToken(ctx, token)
	if err != nil {
		return "", err
	}
	return t.Scope, nil
}

// requireToken guards the API, the WebSocket and /metrics once a token is
// configured: GET and HEAD need a read token, everything else admin. A
// browser authenticated by its cookie must also send its own Origin on
// requests that change things (a second guard against cross-site requests
// besides SameSite).
func (s *Server) requireToken(c *fiber.Ctx) error {
	if !s.authRequired(c.UserContext()) {
		return c.Next()
	}
	need := devices.ScopeAdmin
	if c.Method() == fiber.MethodGet || c.Method() == fiber.MethodHead {
		need = devices.ScopeRead
	}
	token, fromCookie := requestToken(c)
	scope, err := s.scopeOf(c.UserContext(), token)
	if err != nil {
		s.Stats.Refused(devices.RefusedHTTPUnauthorized)
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="telehub"`)
		if errors.Is(err, devices.ErrUnauthorized) {
			if token == "" {
				return errorf(devices.ErrUnauthorized, "this hub requires an API token: send Authorization: Bearer TOKEN or log in")
			}
			return errorf(devices.ErrUnauthorized, "unknown or revoked API token")
		}
		return err
	}
	if !scope.Allows(need) {
		s.Stats.Refused(devices.RefusedHTTPForbidden)
		return errorf(devices.ErrForbidden, "this needs an %s token; yours is %s", need, scope)
	}
	if fromCookie && need == devices.ScopeAdmin && !s.sameOrigin(c) {
		s.Stats.Refused(devices.RefusedHTTPForbidden)
		return errorf(devices.ErrForbidden, "cross-origin request refused")
	}
	c.Locals("scope", scope)
	return c.Next()
}

// sameOrigin reports whether the request's Origin is the hub's own.
func (s *Server) sameOrigin(c *fiber.Ctx) bool {
	u, err := url.Parse(c.Get(fiber.HeaderOrigin))
	return err == nil && u.Host != "" && u.Host == c.Hostname()
}

// handleAuthInfo serves GET /api/v1/auth: whether a token is required and
// whether this request has a valid one, for the dashboard's login page.
func (s *Server) handleAuthInfo(c *fiber.Ctx) error {
	required := s.authRequired(c.UserContext())
	body := fiber.Map{"required": required, "authenticated": !required}
	if token, _ := requestToken(c); required && token != "" {
		if scope, err := s.scopeOf(c.UserContext(), token); err == nil {
			body["authenticated"], body["scope"] = true, scope
		}
	}
	return c.JSON(body)
}

// handleLogin serves POST /api/v1/login {"token":"..."}: it checks the
// token and stores it in the HttpOnly cookie, so that the dashboard never
// keeps it in script-readable storage or URLs.
func (s *Server) handleLogin(c *fiber.Ctx) error {
	var req struct {
		Token string `json:"token"`
	}
	if err := c.BodyParser(&req); err != nil || req.Token == "" {
		return invalid("token", "send {\"token\":\"...\"}")
	}
	scope, err := s.scopeOf(c.UserContext(), req.Token)
	if err != nil {
		s.Stats.Refused(devices.RefusedHTTPUnauthorized)
		if errors.Is(err, devices.ErrUnauthorized) {
			return errorf(devices.ErrUnauthorized, "unknown or revoked API token")
		}
		return err
	}
	c.Cookie(&fiber.Cookie{
		Name: tokenCookie, Value: req.Token, Path: "/", MaxAge: int(tokenCookieAge.Seconds()),
		HTTPOnly: true, SameSite: fiber.CookieSameSiteStrictMode, Secure: s.TLSConfig != nil,
	})
	return c.JSON(fiber.Map{"scope": scope})
}

// handleLogout serves POST /api/v1/logout: it clears the cookie.
func (s *Server) handleLogout(c *fiber.Ctx) error {
	c.Cookie(&fiber.Cookie{Name: tokenCookie, Value: "", Path: "/", MaxAge: -1, HTTPOnly: true,
		SameSite: fiber.CookieSameSiteStrictMode, Secure: s.TLSConfig != nil})
	return c.SendStatus(fiber.StatusNoContent)
}

// handleAddCredential serves POST /api/v1/devices {"id":"..."}: a device
// credential; the token is in the answer and nowhere else.
func (s *Server) handleAddCredential(c *fiber.Ctx) error {
	if s.Credentials == nil {
		return fiber.NewError(fiber.StatusNotImplemented, "device credentials are not available")
	}
	var req struct {
		ID string `json:"id"`
	}
	if err := c.BodyParser(&req); err != nil {
		return invalid("id", "send {\"id\":\"DEVICE\"}")
	}
	if err := devices.ValidateDeviceID(req.ID); err != nil {
		return invalid("id", "%s", err)
	}
	token, err := s.Credentials.AddDevice(c.UserContext(), req.ID)
	if err != nil {
		return err
	}
	s.Logger.Info("device credential added", "device", req.ID)
	return c.Status(fiber.StatusCreated).JSON(fiber.Map{"device": req.ID, "token": token})
}

// handleListCredentials serves GET /api/v1/credentials (admin): the devices
// that have a credential, without secrets.
func (s *Server) handleListCredentials(c *fiber.Ctx) error {
	if s.Credentials == nil {
		return fiber.NewError(fiber.StatusNotImplemented, "device credentials are not available")
	}
	if scope, _ := c.Locals("scope").(devices.Scope); s.authRequired(c.UserContext()) && scope != devices.ScopeAdmin {
		s.Stats.Refused(devices.RefusedHTTPForbidden)
		return errorf(devices.ErrForbidden, "listing credentials needs an admin token")
	}
	list, err := s.Credentials.DeviceCredentials(c.UserContext())
	if err != nil {
		return err
	}
	return c.JSON(fiber.Map{"credentials": list})
}

// handleRotateCredential serves POST /api/v1/devices/{id}/token: a new
// token replaces the old one, and connections made with the old one end.
func (s *Server) handleRotateCredential(c *fiber.Ctx) error {
	if s.Credentials == nil {
		return fiber.NewError(fiber.StatusNotImplemented, "device credentials are not available")
	}
	id, err := deviceParam(c)
	if err != nil {
		return err
	}
	token, err := s.Credentials.RotateDevice(c.UserContext(), id)
	if err != nil {
		return err
	}
	n := s.disconnect(id)
	s.Logger.Info("device credential rotated", "device", id, "disconnected", n)
	return c.JSON(fiber.Map{"device": id, "token": token, "disconnected": n})
}

// handleRevokeCredential serves DELETE /api/v1/devices/{id}/token: the
// device's credential is deleted and its connections end.
func (s *Server) handleRevokeCredential(c *fiber.Ctx) error {
	if s.Credentials == nil {
		return fiber.NewError(fiber.StatusNotImplemented, "device credentials are not available")
	}
	id, err := deviceParam(c)
	if err != nil {
		return err
	}
	if err := s.Credentials.RevokeDevice(c.UserContext(), id); err != nil {
		return err
	}
	n := s.disconnect(id)
	s.Logger.Info("device credential revoked", "device", id, "disconnected", n)
	return c.JSON(fiber.Map{"device": id, "disconnected": n})
}

func (s *Server) disconnect(device string) int {
	if s.DisconnectDevice == nil {
		return 0
	}
	return s.DisconnectDevice(device)
}
