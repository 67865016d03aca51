package dashboard

import (
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/telehub/telehub/devices"
)

// guardBrowser keeps other sites out, token or no token:
//
//   - DNS rebinding: a page on evil.example whose name is made to resolve
//     to the hub would be same-origin with it. The Host must be an IP
//     literal, localhost, this machine's name, or one of AllowedHosts.
//   - Cross-site requests: every request that changes something (anything
//     but GET, HEAD and OPTIONS) must come from the hub's own origin or one
//     of AllowedOrigins when it carries an Origin, and must not be marked
//     cross-site by the browser (Sec-Fetch-Site). Clients that are not
//     browsers send neither and are not affected.
//
// X-Forwarded-Host counts only from TrustedProxies (Fiber's trusted proxy
// check is always on).
func (s *Server) guardBrowser(c *fiber.Ctx) error {
	if !s.hostAllowed(c.Hostname()) {
		s.Stats.Refused(devices.RefusedHTTPHost)
		return errorf(devices.ErrForbidden, "host %q is not one of this hub's names: add it with --allowed-hosts", truncate(c.Hostname(), 100))
	}
	switch c.Method() {
	case fiber.MethodGet, fiber.MethodHead, fiber.MethodOptions:
		return c.Next()
	}
	if c.Get("Sec-Fetch-Site") == "cross-site" || c.Get(fiber.HeaderOrigin) != "" && !s.originAllowed(c) {
		s.Stats.Refused(devices.RefusedHTTPCrossOrigin)
		return errorf(devices.ErrForbidden, "cross-origin request refused")
	}
	return c.Next()
}

// hostAllowed reports whether host (a Host header, with or without port)
// names this hub.
func (s *Server) hostAllowed(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if host == "" || net.ParseIP(host) != nil || host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true // an IP literal cannot be rebound; localhost resolves locally
	}
	if name, err := os.Hostname(); err == nil {
		name = strings.ToLower(name)
		if host == name || host == name+".local" {
			return true
		}
	}
	for _, h := range s.AllowedHosts {
		h = strings.ToLower(h)
		if host == h || strings.HasPrefix(h, "*.") && strings.HasSuffix(host, h[1:]) {
			return true
		}
	}
	return false
}

// originAllowed accepts requests without Origin (not from a browser), from
// the hub's own origin, and from AllowedOrigins.
func (s *Server) originAllowed(c *fiber.Ctx) bool {
	origin := c.Get(fiber.HeaderOrigin)
	if origin == "" {
		return true
	}
	if u, err := url.Parse(origin); err == nil && u.Host != "" && u.Host == c.Hostname() {
		return true
	}
	for _, o := range s.AllowedOrigins {
		if strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
