package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/devices"
)

// Defaults for Broker fields.
const (
	DefaultAddr         = "127.0.0.1:1883"
	DefaultMaxPayload   = 256 << 10
	DefaultWriteTimeout = 5 * time.Second
	// DefaultConnectTimeout is Broker.ConnectTimeout's default.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultMaxKeepAlive is the keep alive a client gets when it asks for
	// none (0) or a longer one.
	DefaultMaxKeepAlive = 5 * time.Minute
	// DefaultMaxSessionExpiry is how long a session is kept for a client
	// that went away, at most (MQTT 5 Session Expiry; MQTT 3.1.1 clean
	// session off).
	DefaultMaxSessionExpiry = 24 * time.Hour
	// DefaultMaxSessions caps the sessions kept for clients that went away.
	DefaultMaxSessions = 10000
	// TopicAliasMaximum is the topic aliases one MQTT 5 connection may set
	// (mochi's default, 65,535, let one connection hold 65,535 topics of up
	// to 64 KiB each).
	TopicAliasMaximum = 16

	// DefaultClientWritesPending bounds the packets queued for one client.
	// mochi allocates the queue up front: its default of 8,192 costs 64 KiB
	// per connection, idle or not: 81 KiB of resident memory per idle
	// connection in all, against about 40 KiB with this
	// (TestFault_10kConnections). The rest is mochi's two goroutines per
	// connection. An MQTT subscriber that falls this far
	// behind a burst misses forwards, which are counted (ForwardDropped);
	// storage and the WebSocket feed are not affected.
	DefaultClientWritesPending = 2048
	// DefaultClientBufferSize is each connection's read and write buffer.
	DefaultClientBufferSize = 1024
)

// Broker is the embedded MQTT broker. Build it with New, set the fields,
// then Open; Close stops it.
type Broker struct {
	// Addr is the TCP listen address. Default DefaultAddr (loopback only).
	Addr string
	// Writer receives every telemetry and status publish. Required.
	Writer devices.MessageWriter
	// Commands follows the commands the broker publishes (SendCommand):
	// which devices listen, PUBACKs, answers. Optional.
	Commands CommandHandler
	// Scheme maps topics to devices. Default devices.DefaultScheme().
	Scheme *devices.Scheme
	// MaxPayload is the largest payload stored, in bytes; a larger publish
	// is refused and counted. Default DefaultMaxPayload. Packets larger than
	// MaxPayload plus 64 KiB (room for topic and properties) are not even
	// read: the client is disconnected, as MQTT 5 prescribes (reason 0x95).
	MaxPayload int
	// WriteTimeout bounds every write to a client, the broker's own and the
	// acknowledgements: a client that does not read its socket for that long
	// is disconnected. Default DefaultWriteTimeout.
	WriteTimeout time.Duration
	// ConnectTimeout bounds how long a new connection may take to send its
	// CONNECT before it is closed. Default DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// MaxKeepAlive is the longest keep alive a client may ask for; one that
	// asks for none (0) or longer gets this, told in the CONNACK's Server
	// Keep Alive on MQTT 5 [MQTT-3.1.2-21], and is disconnected after one
	// and a half of it in silence [MQTT-3.1.2-24]. Default
	// DefaultMaxKeepAlive.
	MaxKeepAlive time.Duration
	// MaxSessionExpiry is the longest a client's session outlives its
	// connection (the CONNACK tells MQTT 5 clients that ask for more).
	// Default DefaultMaxSessionExpiry.
	MaxSessionExpiry time.Duration
	// MaxSessions caps the sessions kept for clients that went away; past
	// it the sessions away longest are dropped. Default DefaultMaxSessions.
	MaxSessions int
	// Stats counts received and refused messages. Optional.
	Stats *devices.Stats

	// Auth checks device tokens. Nil: no device credentials exist, and
	// RequireAuth must be false.
	Auth DeviceAuthenticator
	// RequireAuth refuses clients that do not authenticate as a device. Off,
	// clients without credentials connect anonymously (for loopback use);
	// credentials that are presented must hold either way.
	RequireAuth bool
	// TLSAddr, when set, adds a listener speaking MQTT over TLS with
	// TLSConfig (which must hold a certificate). Where TLSConfig asks for
	// client certificates (ClientCAs and ClientAuth), a verified
	// certificate authenticates the device named by its common name.
	TLSAddr   string
	TLSConfig *tls.Config
	// Presence, when set, is told when a device's first connection starts
	// and its last one ends: the device it authenticated as, or the devices
	// an anonymous client published for.
	Presence Presence
	// ClientWritesPending bounds the packets queued for one client. Default
	// DefaultClientWritesPending.
	ClientWritesPending int
	// MaxConnections caps connected clients; 0 means no limit.
	MaxConnections int
	// DeviceRate limits each device to this many publishes per second on
	// average, with bursts of DeviceBurst; 0 means no limit.
	DeviceRate  float64
	DeviceBurst int
	// Options are mochi's server options; nil means Telehub's defaults.
	// Capabilities.MaximumPacketSize is always set from MaxPayload.
	Options *mqtt.Options
	// Logger defaults to slog.Default() with component=broker.
	Logger *slog.Logger

	server   *mqtt.Server
	hook     *hook        // ingest: OnPublish, wills, '$' topics
	auth     *authHook    // authentication and ACL
	session  *sessionHook // presence, and the end of each registry entry
	conns    registry     // every accepted connection's state
	cmds     downlink     // commands: who listens, packets in flight
	limiter  rateLimiter  // DeviceRate
	throttle devices.Throttle
	acks     *acker
	cancel   context.CancelFunc // stops the acker and the registry sweep
	wg       sync.WaitGroup     // the registry sweep
	ln       *listeners.Net
	tlsLn    *listeners.Net
	raw      []net.Listener // the TCP listeners under ln and tlsLn
	closed   sync.Once
}

// New returns a Broker writing to w with every other field at its default.
func New(w devices.MessageWriter) *Broker {
	return &Broker{
		Addr:             DefaultAddr,
		Writer:           w,
		Scheme:           devices.DefaultScheme(),
		MaxPayload:       DefaultMaxPayload,
		WriteTimeout:     DefaultWriteTimeout,
		ConnectTimeout:   DefaultConnectTimeout,
		MaxKeepAlive:     DefaultMaxKeepAlive,
		MaxSessionExpiry: DefaultMaxSessionExpiry,
		MaxSessions:      DefaultMaxSessions,
		Logger:           slog.Default().With("component", "broker"),
	}
}

// Open binds the listener (so "address in use" is an Open error) and starts
// serving.
func (b *Broker) Open() (err error) {
	if b.Writer == nil {
		return errors.New("open broker: writer required")
	}
	if b.Addr == "" {
		b.Addr = DefaultAddr
	}
	if b.Scheme == nil {
		b.Scheme = devices.DefaultScheme()
	}
	if b.MaxPayload <= 0 {
		b.MaxPayload = DefaultMaxPayload
	}
	if b.WriteTimeout <= 0 {
		b.WriteTimeout = DefaultWriteTimeout
	}
	if b.MaxKeepAlive <= 0 {
		b.MaxKeepAlive = DefaultMaxKeepAlive
	}
	if b.ConnectTimeout <= 0 {
		b.ConnectTimeout = DefaultConnectTimeout
	}
	if b.MaxKeepAlive > 65535*time.Second {
		return errors.New("open broker: MaxKeepAlive is at most 65535 s")
	}
	if b.MaxSessionExpiry <= 0 {
		b.MaxSessionExpiry = DefaultMaxSessionExpiry
	}
	if b.MaxSessions <= 0 {
		b.MaxSessions = DefaultMaxSessions
	}
	if b.Stats == nil {
		b.Stats = new(devices.Stats)
	}
	if b.Logger == nil {
		b.Logger = slog.Default().With("component", "broker")
	}
	opts := b.Options
	if opts == nil {
		opts = &mqtt.Options{}
	}
	opts.InlineClient = true // forwarding committed QoS 1 messages uses Server.Publish
	if opts.Logger == nil {
		opts.Logger = slog.New(mochiHandler{Handler: b.Logger.Handler(), throttle: &devices.Throttle{Interval: time.Minute}}).With("lib", "mochi")
	}
	if opts.Capabilities == nil {
		opts.Capabilities = mqtt.NewDefaultServerCapabilities()
		opts.Capabilities.MaximumClientWritesPending = DefaultClientWritesPending
		if b.ClientWritesPending > 0 {
			opts.Capabilities.MaximumClientWritesPending = int32(b.ClientWritesPending)
		}
	}
	if opts.ClientNetReadBufferSize == 0 {
		opts.ClientNetReadBufferSize = DefaultClientBufferSize
	}
	if opts.ClientNetWriteBufferSize == 0 {
		opts.ClientNetWriteBufferSize = DefaultClientBufferSize
	}
	opts.Capabilities.MaximumPacketSize = uint32(b.MaxPayload + 64<<10)
	opts.Capabilities.MaximumSessionExpiryInterval = uint32(min(b.MaxSessionExpiry/time.Second, math.MaxUint32))
	opts.Capabilities.TopicAliasMaximum = TopicAliasMaximum
	// A PUBACK that echoes the publish's user properties carries reason code
	// 0x01 (granted QoS 1), which is no PUBACK reason code: MQTT.js then
	// refuses the acknowledgement and every later one on that connection.
	opts.Capabilities.Compatibilities.NoInheritedPropertiesOnAck = true
	b.server = mqtt.New(opts)

	if b.RequireAuth && b.Auth == nil {
		return errors.New("open broker: authentication required but no credential store given")
	}
	burst := float64(b.DeviceBurst)
	if burst < 1 {
		burst = max(1, b.DeviceRate)
	}
	b.limiter = rateLimiter{rate: b.DeviceRate, burst: burst}
	b.throttle = devices.Throttle{Interval: time.Minute}
	b.startAcker()
	b.hook = &hook{broker: b}
	b.hook.ctx, b.hook.cancel = context.WithCancel(context.Background())
	b.auth = &authHook{broker: b}
	b.session = &sessionHook{broker: b, count: presenceCount{p: b.Presence}}
	// The command hook goes before the session hook, whose OnDisconnect
	// forgets the connection.
	for _, h := range []mqtt.Hook{&limitsHook{broker: b}, b.auth, &commandHook{broker: b}, b.session, b.hook} {
		if err := b.server.AddHook(h, nil); err != nil {
			return fmt.Errorf("open broker: %w", err)
		}
	}
	if b.ln, err = b.listen("mqtt", b.Addr, nil); err != nil {
		return err
	}
	if b.TLSAddr != "" {
		if b.TLSConfig == nil || (len(b.TLSConfig.Certificates) == 0 && b.TLSConfig.GetCertificate == nil) {
			return errors.New("open broker: TLS listener needs a certificate")
		}
		if b.tlsLn, err = b.listen("mqtts", b.TLSAddr, b.TLSConfig); err != nil {
			return err
		}
	}
	if err := b.server.Serve(); err != nil {
		return fmt.Errorf("open broker: %w", err)
	}
	return nil
}

// listen binds addr (so "address in use" is an Open error) and adds it to
// mochi as a listener whose connections have a write deadline, with TLS
// over it when cfg is set.
func (b *Broker) listen(id, addr string, cfg *tls.Config) (*listeners.Net, error) {
	raw, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("open broker: listen %s: %w", addr, err)
	}
	var ln net.Listener = writeTimeoutListener{Listener: raw, timeout: b.WriteTimeout, connectTimeout: b.ConnectTimeout}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	l := listeners.NewNet(id, ln)
	if err := b.server.AddListener(l); err != nil {
		raw.Close()
		return nil, fmt.Errorf("open broker: listen %s: %w", addr, err)
	}
	b.raw = append(b.raw, raw)
	return l, nil
}

// closeClients stops new connections and disconnects every client, waiting
// (up to 2 s) until mochi has removed them all. mochi's Server.Close can
// deadlock with a client being removed at that very moment:
// Clients.GetByListener takes its read lock twice, and a Delete waiting
// between the two blocks the second for ever (seen once in CI, in a test's
// cleanup). With no client left, nothing is removed while it runs.
func (b *Broker) closeClients() {
	for _, l := range b.raw {
		l.Close() // mochi's Serve returns; its own Close of the listener later is harmless
	}
	live := func() []*mqtt.Client {
		var out []*mqtt.Client
		for _, cl := range b.server.Clients.GetAll() {
			if !cl.Net.Inline {
				out = append(out, cl)
			}
		}
		return out
	}
	// First a DISCONNECT and a half close: what was written (the last
	// acknowledgements among it) goes out before the FIN, the client's own
	// close ends the connection, and its packets still on the way are read
	// meanwhile. Closing at once, with them unread, sends a reset, and a
	// reset can make the client's TCP stack drop acknowledgements it has
	// not read yet: the client sends those messages again after the
	// restart, and they are stored twice.
	for _, cl := range live() {
		hc := halfCloser(cl.Net.Conn)
		if hc == nil { // no half close: DISCONNECT and close at once
			b.server.DisconnectClient(cl, packets.ErrServerShuttingDown)
			continue
		}
		cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect},
			ReasonCode: packets.ErrServerShuttingDown.Code, Properties: packets.Properties{ReasonString: packets.ErrServerShuttingDown.Reason}})
		if hc.CloseWrite() != nil {
			b.server.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
	wait := func(d time.Duration) {
		for deadline := time.Now().Add(d); len(live()) > 0 && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
	}
	wait(time.Second)
	for _, cl := range live() { // clients that keep their side open
		b.server.DisconnectClient(cl, packets.ErrServerShuttingDown)
	}
	wait(time.Second)
}

// halfCloser is a client's connection as one that can end its writing
// side alone (a FIN after what was written: TCP, TLS), or nil.
func halfCloser(c net.Conn) interface{ CloseWrite() error } {
	if w, ok := c.(*writeTimeoutConn); ok {
		c = w.Conn
	}
	hc, _ := c.(interface{ CloseWrite() error })
	return hc
}

func (b *Broker) startAcker() {
	b.acks = newAcker(b)
	var ctx context.Context
	ctx, b.cancel = context.WithCancel(context.Background())
	go b.acks.run(ctx)
	b.wg.Add(1)
	go func() { defer b.wg.Done(); b.conns.sweep(ctx) }()
}

// logOnce logs msg at WARN at most once a minute per key, with how many
// were suppressed since.
func (b *Broker) logOnce(key, msg string, args ...any) {
	if ok, suppressed := b.throttle.Allow(key, time.Now()); ok {
		b.Logger.Warn(msg, append(args, "suppressed_since_last", suppressed)...)
	}
}

// ListenAddr returns the address the broker listens on, with the real port
// when Addr asked for port 0.
func (b *Broker) ListenAddr() string {
	if b.ln == nil {
		return ""
	}
	return b.ln.Address()
}

// ForwardDropped returns how many forwards to MQTT subscribers were dropped
// because the subscriber's write queue was full.
func (b *Broker) ForwardDropped() int64 {
	if b.server == nil {
		return 0
	}
	return atomic.LoadInt64(&b.server.Info.MessagesDropped)
}

// TLSListenAddr returns the TLS listener's address, or "" without one.
func (b *Broker) TLSListenAddr() string {
	if b.tlsLn == nil {
		return ""
	}
	return b.tlsLn.Address()
}

// DisconnectDevice ends every connection authenticated as device (after its
// credential was revoked) and returns how many there were.
func (b *Broker) DisconnectDevice(device string) int {
	if b.auth == nil {
		return 0
	}
	return b.auth.disconnect(device)
}

// ConnectedDevices returns how many devices have a live connection (known
// only with Presence set).
func (b *Broker) ConnectedDevices() int {
	if b.session == nil {
		return 0
	}
	return b.session.count.devices()
}

// DeviceConnected reports whether device has a live connection (known only
// with Presence set).
func (b *Broker) DeviceConnected(device string) bool {
	return b.session != nil && b.session.count.connected(device)
}

// URL returns the broker's address as an MQTT URL (tcp://host:port).
func (b *Broker) URL() string {
	host, port, _ := net.SplitHostPort(b.ListenAddr())
	return "tcp://" + net.JoinHostPort(host, port)
}

// Server returns the underlying mochi server.
func (b *Broker) Server() *mqtt.Server { return b.server }

// Clients returns the number of connected clients.
func (b *Broker) Clients() int {
	if b.server == nil {
		return 0
	}
	// Not Clients.Len: that also counts the sessions kept for devices that
	// are away (clean session off).
	return int(atomic.LoadInt64(&b.server.Info.ClientsConnected))
}

// Drain stops taking publishes: from now on QoS 1 and 2 publishes are not
// acknowledged (devices resend them after reconnecting) and QoS 0 ones are
// only forwarded. Call it before closing the Writer so that everything the
// hook accepted is committed and acknowledged before connections close.
func (b *Broker) Drain() {
	if b.hook != nil {
		b.hook.draining.Store(true)
	}
}

// Close drains, writes the acknowledgements still queued, then stops the
// listener and disconnects every client. Close the Writer first, so that
// everything it committed is acknowledged. It is safe after a failed Open
// and more than once.
func (b *Broker) Close(ctx context.Context) error {
	b.Drain()
	var err error
	b.closed.Do(func() {
		if b.hook != nil {
			b.hook.cancel()
		}
		if b.acks != nil {
			b.cancel()
			select {
			case <-b.acks.done:
			case <-ctx.Done():
				err = fmt.Errorf("close broker: acknowledgements: %w", ctx.Err())
			}
			b.wg.Wait()
		}
		if b.server != nil {
			b.closeClients()
			if cerr := b.server.Close(); err == nil {
				err = cerr
			}
		}
	})
	return err
}
