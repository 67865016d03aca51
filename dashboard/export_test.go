package dashboard

import "github.com/gofiber/fiber/v2"

// App exposes the server's Fiber app to the tests, for app.Test.
func App(s *Server) *fiber.App { return s.app }
