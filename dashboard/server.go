package dashboard

import (
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/gofiber/fiber/v2/middleware/filesystem"
	"github.com/gofiber/fiber/v2/middleware/recover"

	"github.com/telehub/telehub/devices"
)

//go:embed static
var staticFS embed.FS

// openAPI describes every route; TestServer_OpenAPI keeps the two in step.
//
//go:embed openapi.json
var openAPI []byte

// Defaults for Server fields.
const (
	DefaultAddr           = "127.0.0.1:8080"
	DefaultWSQueue        = 256
	DefaultWSWriteTimeout = 10 * time.Second
	DefaultReadTimeout    = 30 * time.Second
	DefaultWSMaxClients   = 1000
)

// Server serves the REST API, the WebSocket feed and the UI. Build it with
// NewServer, set the fields, then Open.
type Server struct {
	// Addr is the listen address. Default DefaultAddr (loopback only).
	Addr string
	// Messages reads devices and history. Required.
	Messages devices.MessageService
	// Feed delivers committed messages to WebSocket clients. Required.
	Feed *devices.Feed
	// Deleter removes devices and messages; nil disables the DELETE routes.
	Deleter devices.DataDeleter
	// Backup writes database copies for POST /api/v1/backup; nil disables it.
	Backup Backuper
	// Commands sends commands to devices; nil disables those routes.
	Commands CommandService
	// Attributes reads and sets device attributes; nil disables those routes.
	Attributes AttributeService
	// Alerts keeps alert rules and alerts; nil disables those routes.
	// WebhookSecret is the key that signs webhook requests (shown to admins).
	Alerts        AlertService
	WebhookSecret string
	// Boards keeps the boards users compose; nil disables those routes.
	Boards devices.BoardStore
	// MetricSettings keeps how metrics are shown; nil disables those routes.
	MetricSettings devices.MetricSettingStore
	// Events lists devices' status events; nil disables that route.
	Events devices.EventLog
	// Retention reads and sets per-device retention; nil disables those routes.
	Retention devices.RetentionService
	// Stats are ingestion counters shown by /api/v1/stats. Optional.
	Stats *devices.Stats
	// Ready reports whether the hub can take and store messages; nil means
	// always ready. /readyz answers 503 with its error.
	Ready func() error
	// Metrics serves /metrics (Prometheus); nil means no such route.
	Metrics http.Handler
	// WSQueue is how many committed batches may wait for one WebSocket
	// client before it is resynchronised from the database. Default DefaultWSQueue.
	WSQueue int
	// WSWriteTimeout bounds one WebSocket write; a client that does not
	// read for that long is disconnected. Default DefaultWSWriteTimeout.
	WSWriteTimeout time.Duration
	// WSMaxClients caps open WebSocket connections; more get 503. Default
	// DefaultWSMaxClients.
	WSMaxClients int
	// Credentials checks API tokens and manages device credentials; nil
	// disables both (and with APIToken empty, the API is open).
	Credentials devices.CredentialService
	// APIToken is an admin token from the configuration. With it, or with
	// any token in Credentials, every API request needs a token.
	APIToken string
	// DisconnectDevice ends a device's MQTT connections after its credential
	// is revoked or rotated; nil when the broker is external.
	DisconnectDevice func(device string) int
	// TLSConfig, when set, makes the server speak HTTPS.
	TLSConfig *tls.Config
	// AllowedOrigins are the browser origins (scheme://host[:port]) allowed
	// to open the WebSocket and send requests that change things, besides
	// the hub's own. Empty means same-origin only.
	AllowedOrigins []string
	// AllowedHosts are the names (a Host header without port; "*.example"
	// for a domain's names) the hub answers to besides IP addresses,
	// localhost and this machine's own name. Any other Host is refused, so
	// that a DNS-rebound name cannot reach the API. Empty: just those.
	AllowedHosts []string
	// TrustedProxies are the proxies (IPs or CIDR ranges) whose
	// X-Forwarded-Host and X-Forwarded-For are believed. Empty: none.
	TrustedProxies []string
	// MQTTAddr is where devices publish (host:port of the embedded broker,
	// or the external broker's URL without credentials), for the
	// dashboard's hints; "" if unknown.
	MQTTAddr string
	// Version is the hub's version, shown by GET /api/v1/info.
	Version string
	// Logger defaults to slog.Default() with component=dashboard.
	Logger *slog.Logger

	auth authState

	wsResyncs atomic.Int64 // clients caught up from the database after falling behind
	wsSlow    atomic.Int64 // clients disconnected for not reading
	app       *fiber.App
	ln        net.Listener
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup // the Serve goroutine

	// WebSocket handlers run on connections hijacked from the HTTP server,
	// which does not wait for them; Close does, through this count.
	wsMu      sync.Mutex
	wsN       int
	wsClosing bool
	wsIdle    chan struct{} // closed when wsN drops to 0 during Close
}

// NewServer returns a Server with every field at its default.
func NewServer(msgs devices.MessageService, feed *devices.Feed) *Server {
	return &Server{
		Addr:           DefaultAddr,
		Messages:       msgs,
		Feed:           feed,
		WSQueue:        DefaultWSQueue,
		WSWriteTimeout: DefaultWSWriteTimeout,
		Logger:         slog.Default().With("component", "dashboard"),
	}
}

// Open binds the listener, so that "address in use" is an Open error, and
// serves in the background.
func (s *Server) Open() (err error) {
	if s.Messages == nil || s.Feed == nil {
		return errors.New("open http: messages and feed required")
	}
	if s.Addr == "" {
		s.Addr = DefaultAddr
	}
	if s.WSQueue <= 0 {
		s.WSQueue = DefaultWSQueue
	}
	if s.WSWriteTimeout <= 0 {
		s.WSWriteTimeout = DefaultWSWriteTimeout
	}
	if s.WSMaxClients <= 0 {
		s.WSMaxClients = DefaultWSMaxClients
	}
	if s.Logger == nil {
		s.Logger = slog.Default().With("component", "dashboard")
	}
	if s.Stats == nil {
		s.Stats = new(devices.Stats)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.app = fiber.New(fiber.Config{
		DisableStartupMessage: true,
		ReadTimeout:           DefaultReadTimeout,
		IdleTimeout:           2 * time.Minute,
		BodyLimit:             64 << 10,
		ErrorHandler:          s.handleError,
		AppName:               "telehub",
		// Proxy headers count only from TrustedProxies (none by default).
		EnableTrustedProxyCheck: true,
		TrustedProxies:          s.TrustedProxies,
		ProxyHeader:             proxyHeader(s.TrustedProxies),
	})
	s.routes()
	if s.ln, err = net.Listen("tcp", s.Addr); err != nil {
		return fmt.Errorf("open http: listen %s: %w", s.Addr, err)
	}
	if s.TLSConfig != nil {
		s.ln = tls.NewListener(s.ln, s.TLSConfig)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.app.Listener(s.ln); err != nil {
			s.Logger.Error("http server stopped", "error", err)
		}
	}()
	return nil
}

func (s *Server) routes() {
	// A handler bug answers 500 and is logged with its stack; it never
	// takes down the process, which also runs the broker and the writer.
	s.app.Use(recover.New(recover.Config{
		EnableStackTrace: true,
		StackTraceHandler: func(c *fiber.Ctx, e any) {
			s.Logger.Error("request panicked", "method", c.Method(), "path", c.Path(), "panic", fmt.Sprint(e), "stack", string(debug.Stack()))
		},
	}))
	s.app.Use(s.securityHeaders)
	s.app.Use(s.guardBrowser)
	s.app.Get("/healthz", func(c *fiber.Ctx) error { return c.JSON(fiber.Map{"status": "ok"}) })
	s.app.Get("/readyz", s.handleReady)
	if s.Metrics != nil {
		s.app.Get("/metrics", s.requireToken, adaptor.HTTPHandler(s.Metrics))
	}
	api := s.app.Group("/api/v1")
	// Open to all: what the login page needs.
	api.Get("/auth", s.handleAuthInfo)
	api.Post("/login", s.handleLogin)
	api.Post("/logout", s.handleLogout)
	api.Use(s.requireToken)
	api.Get("/devices", s.handleListDevices)
	api.Post("/devices", s.handleAddCredential)
	api.Get("/credentials", s.handleListCredentials)
	api.Post("/devices/:id/token", s.handleRotateCredential)
	api.Delete("/devices/:id/token", s.handleRevokeCredential)
	api.Get("/devices/:id", s.handleGetDevice)
	api.Get("/devices/:id/messages", s.handleListMessages)
	api.Get("/devices/:id/series", s.handleSeries)
	api.Delete("/devices/:id", s.handleDeleteDevice)
	api.Delete("/devices/:id/messages", s.handleDeleteMessages)
	api.Get("/devices/:id/events", s.handleEvents)
	api.Post("/devices/:id/commands", s.handleCreateCommand)
	api.Get("/devices/:id/commands", s.handleListCommands)
	api.Get("/devices/:id/commands/:cmd", s.handleGetCommand)
	api.Delete("/devices/:id/commands/:cmd", s.handleCancelCommand)
	api.Get("/devices/:id/attributes", s.handleGetAttributes)
	api.Get("/devices/:id/attributes/history", s.handleAttributeHistory)
	api.Put("/devices/:id/attributes/shared", s.handleSetShared)
	api.Patch("/devices/:id/attributes/shared", s.handleSetShared)
	s.alertRoutes(api)
	s.boardRoutes(api)
	api.Get("/devices/:id/retention", s.handleGetRetention)
	api.Put("/devices/:id/retention", s.handleSetRetention)
	api.Delete("/devices/:id/retention", s.handleClearRetention)
	api.Get("/devices/:id/latest", s.handleLatest)
	api.Get("/devices/:id/keys", s.handleDeviceKeys)
	api.Get("/metrics/keys", s.handleKeys)
	api.Get("/export", s.handleExport)
	api.Get("/stats", s.handleStats)
	api.Get("/info", func(c *fiber.Ctx) error { return c.JSON(fiber.Map{"version": s.Version, "mqtt": s.MQTTAddr}) })
	api.Post("/backup", s.handleBackup)
	api.Get("/openapi.json", func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.Send(openAPI)
	})
	api.Get("/ws", s.handleWSUpgrade, s.wsHandler())
	api.Use(func(c *fiber.Ctx) error { return fiber.ErrNotFound })

	sub, _ := fs.Sub(staticFS, "static")
	s.app.Use("/", filesystem.New(filesystem.Config{Root: http.FS(sub), Index: "index.html"}))
}

// proxyHeader is the header Fiber's c.IP() reads the client's address from:
// X-Forwarded-For behind trusted proxies, none otherwise.
func proxyHeader(trusted []string) string {
	if len(trusted) == 0 {
		return ""
	}
	return fiber.HeaderXForwardedFor
}

func (s *Server) securityHeaders(c *fiber.Ctx) error {
	if s.TLSConfig != nil {
		c.Set("Strict-Transport-Security", "max-age=31536000")
	}
	c.Set("X-Content-Type-Options", "nosniff")
	c.Set("X-Frame-Options", "DENY")
	c.Set("Referrer-Policy", "no-referrer")
	// Images may come from https origins: a map panel's tiles (its tile
	// URL is the user's choice). Scripts, styles and connections stay on
	// the hub's own origin.
	c.Set("Content-Security-Policy", "default-src 'self'; connect-src 'self'; img-src 'self' data: https:; style-src 'self'; script-src 'self'; frame-ancestors 'none'")
	return c.Next()
}

// Routes returns every route as "METHOD /path", with path parameters
// written {name} as in OpenAPI. HEAD routes that Fiber adds for each GET are
// left out.
func (s *Server) Routes() []string {
	var out []string
	for _, r := range s.app.GetRoutes(true) {
		if r.Method == fiber.MethodHead || r.Path == "/" {
			continue
		}
		parts := strings.Split(r.Path, "/")
		for i, p := range parts {
			if strings.HasPrefix(p, ":") {
				parts[i] = "{" + p[1:] + "}"
			}
		}
		out = append(out, r.Method+" "+strings.Join(parts, "/"))
	}
	return out
}

// ListenAddr returns the bound address (with the real port for ":0").
func (s *Server) ListenAddr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// URL returns the server's base URL, e.g. http://127.0.0.1:8080 (https
// with TLSConfig).
func (s *Server) URL() string {
	if s.TLSConfig != nil {
		return "https://" + s.ListenAddr()
	}
	return "http://" + s.ListenAddr()
}

// WSDrops returns how many times a WebSocket client fell behind the live
// feed and was caught up from the database, and how many clients were
// disconnected for being too slow.
func (s *Server) WSDrops() (resyncs, slow int64) { return s.wsResyncs.Load(), s.wsSlow.Load() }

// WSClients returns the number of open WebSocket connections.
func (s *Server) WSClients() int {
	s.wsMu.Lock()
	defer s.wsMu.Unlock()
	return s.wsN
}

// shutdownGrace is how long Close waits for HTTP requests under way.
const shutdownGrace = 5 * time.Second

// Close ends every WebSocket with a close frame (1001 going away), then shuts
// the HTTP server down, waiting for in-flight requests for shutdownGrace at
// most (and until ctx is done). It is safe after a failed Open.
func (s *Server) Close(ctx context.Context) error {
	if s.cancel != nil {
		s.cancel() // WebSocket handlers send a close frame and return
	}
	s.wsMu.Lock()
	s.wsClosing = true
	idle := make(chan struct{})
	if s.wsN == 0 {
		close(idle)
	} else {
		s.wsIdle = idle
	}
	s.wsMu.Unlock()

	var err error
	if s.app != nil && s.ln != nil {
		// Requests under way get shutdownGrace to finish. fasthttp waits
		// for every connection it counts as open, a browser's spare
		// connection that never sent a request too (seen: 30 s, the read
		// timeout): past the grace the hub goes on closing, and such a
		// connection ends on its own timeout.
		grace, cancel := context.WithTimeout(ctx, shutdownGrace)
		err = s.app.ShutdownWithContext(grace)
		cancel()
		if err != nil && ctx.Err() == nil {
			s.Logger.Warn("http connections still open after the shutdown grace", "grace", shutdownGrace, "open", s.app.Server().GetOpenConnectionsCount())
			err = nil
		}
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); <-idle; close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		if err == nil {
			err = fmt.Errorf("close http: %w", ctx.Err())
		}
	}
	return err
}

func (s *Server) handleReady(c *fiber.Ctx) error {
	if s.Ready != nil {
		if err := s.Ready(); err != nil {
			return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"status": "not ready", "error": err.Error()})
		}
	}
	return c.JSON(fiber.Map{"status": "ready"})
}
