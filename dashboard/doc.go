// Package dashboard is Telehub's web side: the REST API under /api/v1, the
// WebSocket live feed with replay, health and metrics endpoints, and the
// embedded browser UI, served by Fiber.
//
// It imports devices (the service interfaces) and Fiber; cmd/telehub hands
// it the store.
package dashboard
