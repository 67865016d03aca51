package broker

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/telehub/telehub/devices"
)

// DeviceAuthenticator returns the device a token belongs to, or an error
// wrapping devices.ErrUnauthorized. store.Credentials implements it.
type DeviceAuthenticator interface {
	AuthenticateDevice(ctx context.Context, token string) (string, error)
}

// ThingsBoard-style topic: a device authenticated by its token publishes
// telemetry here without naming itself.
const meTelemetryTopic = "v1/devices/me/telemetry"

// authHook decides who connects and what each client may publish and
// subscribe to. Deny by default: a client that authenticated as a device may
// publish only to that device's topics and subscribe only to its command
// topics (devices/{id}/commands/...). Anonymous clients exist only where
// RequireAuth is off (the loopback default); they may use any topic but '$'
// ones, like a plain broker.
//
// mochi's own auth ledger is not used: it keeps passwords in clear, treats
// an empty or "*" rule as matching anything and allows what no rule matches.
type authHook struct {
	mqtt.HookBase
	broker *Broker
}

func (h *authHook) ID() string { return "telehub-auth" }

func (h *authHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}

// OnConnectAuthenticate accepts, in this order: a verified client
// certificate (its common name is the device id); a device token as the
// password (the username, if any, must be that device's id); a device
// token as the username (ThingsBoard style). Credentials that do not check
// out are refused even where anonymous access is allowed.
//
// An authenticated device's session is its own: its client id is kept
// under the device's name (devices/{id}'s client "x" is "id/x" inside the
// broker, and "id" stays "id"), so that no device can take over another's
// session, subscriptions and queued messages by using its client id.
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	b := h.broker
	device, presented, err := h.authenticate(cl, pk)
	switch {
	case err != nil:
		b.Stats.Refused(devices.RefusedBadCredentials)
		// The username may be a token: never log it.
		b.logOnce("bad_credentials", "connection refused: "+err.Error(), "remote", cl.Net.Remote, "client", cl.ID)
		return false
	case device != "" && pk.Connect.WillFlag && !h.mayPublish(device, pk.Connect.WillTopic):
		// The broker publishes the will itself, past OnACLCheck: check it now.
		b.Stats.Refused(devices.RefusedBadCredentials)
		b.logOnce("will|"+device, "connection refused: last will on another device's topic", "device", device, "topic", pk.Connect.WillTopic)
		return false
	case device == "" && (presented || b.RequireAuth):
		b.Stats.Refused(devices.RefusedBadCredentials)
		b.logOnce("bad_credentials", "connection refused: no device credentials", "remote", cl.Net.Remote, "client", cl.ID)
		return false
	}
	if device != "" && cl.ID != device {
		cl.ID = device + "/" + cl.ID // '/' is never part of a device id
	}
	b.conns.add(cl, &connState{device: device, seen: map[string]struct{}{}})
	return true
}

var errBadToken = errors.New("unknown or revoked device token")

// authenticate returns the device cl proves to be, whether it presented
// credentials at all, and an error for credentials that do not hold.
func (h *authHook) authenticate(cl *mqtt.Client, pk packets.Packet) (device string, presented bool, err error) {
	if tc, ok := cl.Net.Conn.(*tls.Conn); ok {
		st := tc.ConnectionState()
		if len(st.VerifiedChains) > 0 && len(st.PeerCertificates) > 0 {
			cn := st.PeerCertificates[0].Subject.CommonName
			if err := devices.ValidateDeviceID(cn); err != nil {
				return "", true, errors.New("client certificate common name is not a valid device id")
			}
			if user := string(pk.Connect.Username); user != "" && user != cn {
				return "", true, errors.New("username differs from the client certificate's device")
			}
			return cn, true, nil
		}
	}
	user, pass := string(pk.Connect.Username), string(pk.Connect.Password)
	token := pass
	if token == "" {
		token = user
		user = ""
	}
	if token == "" {
		return "", false, nil
	}
	if h.broker.Auth == nil {
		return "", true, errors.New("device credentials are not configured")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	device, err = h.broker.Auth.AuthenticateDevice(ctx, token)
	if errors.Is(err, devices.ErrUnauthorized) {
		return "", true, errBadToken
	} else if err != nil {
		return "", true, errors.New("credential lookup failed")
	}
	if user != "" && user != device {
		return "", true, errors.New("username is not the token's device")
	}
	return device, true, nil
}

// OnACLCheck allows an authenticated device to subscribe to its own command
// topics only; anonymous clients (where allowed) everything. Publishes are
// checked in the ingest hook's OnPublish (mayPublish), which sees the topic
// after alias resolution and keeps the order of acknowledgements.
func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if !write && !h.broker.cmds.allowRead(cl, topic) {
		return false // a command for another connection
	}
	device := h.broker.conns.device(cl)
	if device == "" {
		return !h.broker.RequireAuth
	}
	if write {
		return true
	}
	if h.maySubscribe(device, topic) {
		return true
	}
	h.broker.Stats.Refused(devices.RefusedSubscribe)
	h.broker.logOnce("subscribe|"+device, "subscribe refused: not one of the device's own topics", "device", device, "filter", topic)
	return false
}

// mayPublish allows a device its own topics of the scheme, the
// ThingsBoard "me" telemetry topic and answers to its own commands.
func (h *authHook) mayPublish(device, topic string) bool {
	if topic == meTelemetryTopic {
		return true
	}
	if d, _, ok := devices.ParseCommandResponse(device, topic); ok && d == device {
		return true
	}
	if d, _, _, ok := devices.ParseAttributeTopic(device, topic); ok && d == device {
		return true
	}
	d, _, ours, err := h.broker.Scheme.ParseTopic(topic)
	return ours && err == nil && d == device
}

// maySubscribe allows filters within devices/{device}/commands/, the
// device's devices/{device}/attributes/desired, and ThingsBoard's RPC
// requests and attributes (v1/devices/me/rpc/request/...,
// v1/devices/me/attributes...), which reach the device only (publishTo).
func (h *authHook) maySubscribe(device, filter string) bool {
	if strings.HasPrefix(filter, devices.TBRPCRequest) || filter == devices.TBAttributes || strings.HasPrefix(filter, devices.TBAttributeResponse) {
		return true
	}
	if filter == "devices/"+device+"/attributes/desired" {
		return true
	}
	prefix := "devices/" + device + "/commands/"
	return strings.HasPrefix(filter, prefix) && !strings.ContainsAny(filter[:len(prefix)], "+#")
}

// disconnect ends every connection authenticated as device and returns how
// many there were.
func (h *authHook) disconnect(device string) int {
	n := 0
	h.broker.conns.each(func(cl *mqtt.Client, st *connState) {
		if st.device == device {
			h.broker.server.DisconnectClient(cl, packets.ErrNotAuthorized)
			n++
		}
	})
	return n
}
