package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/fasthttp/websocket"

	"github.com/telehub/telehub/devices"
)

// request sends an HTTP request with an optional bearer token and extra
// headers (name, value pairs), and returns the status and body.
func request(tb testing.TB, method, url, token, body string, headers ...string) (int, string) {
	tb.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestSecurity_SafeDefaults: the hub refuses to expose MQTT or HTTP beyond
// loopback without authentication, and says what to do.
func TestSecurity_SafeDefaults(t *testing.T) {
	env := func(string) string { return "" }
	for _, args := range [][]string{
		{"--mqtt", "0.0.0.0:1883"},
		{"--mqtt", ":1883"},
		{"--mqtt-tls-cert", "c.pem", "--mqtt-tls-key", "k.pem", "--mqtts", "[::]:8883"},
	} {
		_, err := ParseFlags(args, env, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--device-auth") || !strings.Contains(err.Error(), "--allow-anonymous") {
			t.Errorf("%v: err=%v, want a refusal naming --device-auth and --allow-anonymous", args, err)
		}
	}
	for _, args := range [][]string{
		{"--mqtt", "127.0.0.1:1883"},
		{"--mqtt", "[::1]:1883"},
		{"--mqtt", "localhost:1883"},
		{"--mqtt", "0.0.0.0:1883", "--device-auth"},
		{"--mqtt", "0.0.0.0:1883", "--allow-anonymous"},
	} {
		if _, err := ParseFlags(args, env, io.Discard); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}
	// HTTP: checked against the database (a token may exist), before
	// anything listens.
	cfg, _ := ParseFlags(nil, env, io.Discard)
	cfg.DB, cfg.HTTPAddr, cfg.MQTTAddr = filepath.Join(t.TempDir(), "t.db"), "0.0.0.0:0", "127.0.0.1:0"
	m := NewMain(cfg, io.Discard)
	err := m.Run()
	m.Close(context.Background())
	if err == nil || !strings.Contains(err.Error(), "--api-token") {
		t.Fatalf("HTTP on 0.0.0.0 without a token: err=%v, want a refusal naming --api-token", err)
	}
}

// TestSecurity_APITokens: once a token is configured, every API route, the
// WebSocket and /metrics refuse requests without one; read tokens cannot
// change anything; the dashboard's cookie works only from its own origin.
func TestSecurity_APITokens(t *testing.T) {
	const admin = "config-admin-token-0123456789"
	m := MustRunMain(t, func(c *Config) { c.APIToken = admin })
	base := m.HTTP.URL()
	ctx := context.Background()
	read, err := m.Store.AddToken(ctx, "viewer", devices.ScopeRead)
	if err != nil {
		t.Fatal(err)
	}
	revoked, _ := m.Store.AddToken(ctx, "old", devices.ScopeAdmin)
	m.Store.RevokeToken(ctx, "old")
	c := mqttConnect(t, m.Broker.URL(), "pub")
	publishN(t, c, "kitchen", 3)

	for _, tt := range []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/api/v1/devices", "", 401},
		{"GET", "/api/v1/devices", "tha_wrong", 401},
		{"GET", "/api/v1/devices", revoked, 401},
		{"GET", "/api/v1/devices", "Basic " + admin, 401},
		{"GET", "/api/v1/devices/kitchen/messages", "", 401},
		{"GET", "/api/v1/export?device=kitchen", "", 401},
		{"GET", "/metrics", "", 401},
		{"GET", "/api/v1/devices", read, 200},
		{"GET", "/api/v1/devices/kitchen/series?metrics=temp", read, 200},
		{"GET", "/metrics", read, 200},
		{"DELETE", "/api/v1/devices/kitchen/messages", read, 403},
		{"DELETE", "/api/v1/devices/kitchen", read, 403},
		{"POST", "/api/v1/devices", read, 403},
		{"GET", "/api/v1/credentials", read, 403},
		{"GET", "/api/v1/credentials", admin, 200},
		{"GET", "/healthz", "", 200},
		{"GET", "/readyz", "", 200},
		{"GET", "/api/v1/auth", "", 200},
		{"GET", "/", "", 200}, // the page itself; its API calls need the login
	} {
		code, body := request(t, tt.method, base+tt.path, tt.token, "")
		if code != tt.want {
			t.Errorf("%s %s with %q: %d, want %d (%s)", tt.method, tt.path, tt.token, code, tt.want, body)
		}
		if code == 401 && !strings.Contains(body, "token") {
			t.Errorf("%s %s: 401 body %q does not say what is missing", tt.method, tt.path, body)
		}
	}
	if code, body := request(t, "GET", base+"/api/v1/devices/kitchen/messages", read, ""); code != 200 || !strings.Contains(body, `"n":2`) {
		t.Fatalf("read token cannot read: %d %s", code, body)
	}

	// The dashboard's login: the cookie carries the token, HttpOnly and
	// SameSite=Strict; it authenticates reads, and writes only from the
	// hub's own origin.
	resp, err := http.Post(base+"/api/v1/login", "application/json", strings.NewReader(`{"token":"`+admin+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var cookie *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "telehub_token" {
			cookie = ck
		}
	}
	if resp.StatusCode != 200 || cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode {
		t.Fatalf("login: %d, cookie %+v; want 200 and an HttpOnly SameSite=Strict cookie", resp.StatusCode, cookie)
	}
	if code, _ := request(t, "POST", base+"/api/v1/login", "", `{"token":"tha_guess"}`); code != 401 {
		t.Fatalf("login with a wrong token: %d", code)
	}
	ck := "telehub_token=" + cookie.Value
	if code, _ := request(t, "GET", base+"/api/v1/devices", "", "", "Cookie", ck); code != 200 {
		t.Fatalf("GET with the cookie: %d", code)
	}
	if code, _ := request(t, "DELETE", base+"/api/v1/devices/kitchen/messages?to=1", "", "", "Cookie", ck, "Origin", "http://evil.example"); code != 403 {
		t.Fatalf("cross-origin DELETE with the cookie: %d, want 403", code)
	}
	if code, _ := request(t, "DELETE", base+"/api/v1/devices/kitchen/messages?to=1", "", "", "Cookie", ck, "Origin", base); code != 200 {
		t.Fatalf("same-origin DELETE with the cookie: %d, want 200", code)
	}

	// The WebSocket: token and Origin are both checked at the handshake.
	ws := "ws" + strings.TrimPrefix(base, "http") + "/api/v1/ws?since=0"
	for _, tt := range []struct {
		name   string
		header http.Header
		want   int
	}{
		{"no token", nil, 401},
		{"read token, foreign origin", http.Header{"Authorization": {"Bearer " + read}, "Origin": {"http://evil.example"}}, 403},
		{"cookie, foreign origin", http.Header{"Cookie": {ck}, "Origin": {"http://evil.example"}}, 403},
	} {
		conn, resp, err := websocket.DefaultDialer.Dial(ws, tt.header)
		if err == nil {
			conn.Close()
			t.Fatalf("%s: handshake accepted", tt.name)
		}
		if resp == nil || resp.StatusCode != tt.want {
			t.Fatalf("%s: %v, want HTTP %d", tt.name, err, tt.want)
		}
	}
	for _, h := range []http.Header{{"Authorization": {"Bearer " + read}}, {"Cookie": {ck}, "Origin": {base}}} {
		conn, _, err := websocket.DefaultDialer.Dial(ws, h)
		if err != nil {
			t.Fatalf("handshake with %v: %v", h, err)
		}
		conn.Close()
	}
	s := m.Stats.Snapshot()
	if s.Refused[devices.RefusedHTTPUnauthorized] < 8 || s.Refused[devices.RefusedHTTPForbidden]+s.Refused[devices.RefusedHTTPCrossOrigin] < 5 || s.Refused[devices.RefusedWSOrigin] != 2 {
		t.Fatalf("refusals not counted: %v", s.Refused)
	}
}

// TestSecurity_DeviceCredentials: with --device-auth, a device provisioned
// through the API publishes with its token; nothing else gets in; revoking
// it over the API disconnects it at once.
func TestSecurity_DeviceCredentials(t *testing.T) {
	const admin = "config-admin-token-0123456789"
	m := MustRunMain(t, func(c *Config) { c.APIToken, c.DeviceAuth = admin, true })
	base := m.HTTP.URL()
	code, body := request(t, "POST", base+"/api/v1/devices", admin, `{"id":"sensor-1"}`)
	var created struct{ Device, Token string }
	json.Unmarshal([]byte(body), &created)
	if code != 201 || created.Device != "sensor-1" || !strings.HasPrefix(created.Token, devices.DeviceTokenPrefix) {
		t.Fatalf("provision: %d %s", code, body)
	}
	if code, _ := request(t, "POST", base+"/api/v1/devices", admin, `{"id":"sensor-1"}`); code != 409 {
		t.Fatalf("provision twice: %d, want 409", code)
	}
	if code, _ := request(t, "POST", base+"/api/v1/devices", admin, `{"id":"bad id"}`); code != 400 {
		t.Fatalf("provision a bad id: %d, want 400", code)
	}

	connect := func(id, user, pass string) (paho.Client, error) {
		o := paho.NewClientOptions().AddBroker(m.Broker.URL()).SetClientID(id).SetAutoReconnect(false).SetProtocolVersion(4).
			SetUsername(user).SetPassword(pass).SetConnectTimeout(5 * time.Second)
		c := paho.NewClient(o)
		tok := c.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			return nil, fmt.Errorf("connect timed out")
		}
		if tok.Error() == nil {
			t.Cleanup(func() { c.Disconnect(0) })
		}
		return c, tok.Error()
	}
	for _, cred := range [][2]string{{"", ""}, {"thd_wrong", ""}, {"sensor-1", "thd_wrong"}, {"other", created.Token}} {
		if _, err := connect("x", cred[0], cred[1]); err == nil {
			t.Fatalf("connected with %q/%q", cred[0], cred[1])
		}
	}
	dev, err := connect("sensor-1", created.Token, "")
	if err != nil {
		t.Fatalf("connect with the token: %v", err)
	}
	if n := publishN(t, dev, "sensor-1", 5); n != 5 {
		t.Fatalf("%d of 5 acknowledged", n)
	}
	if tok := dev.Publish("v1/devices/me/telemetry", 1, false, `{"temp":1}`); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("me topic: %v", tok.Error())
	}
	waitStored(t, m, 6)

	code, body = request(t, "DELETE", base+"/api/v1/devices/sensor-1/token", admin, "")
	if code != 200 || !strings.Contains(body, `"disconnected":1`) {
		t.Fatalf("revoke: %d %s", code, body)
	}
	checkFor(t, 5*time.Second, func() error {
		if dev.IsConnectionOpen() {
			return fmt.Errorf("revoked device still connected")
		}
		return nil
	})
	if _, err := connect("sensor-1b", created.Token, ""); err == nil {
		t.Fatal("revoked token still connects")
	}
	checkFor(t, 5*time.Second, func() error {
		var d struct {
			MessageCount int `json:"message_count"`
		}
		getJSONAuth(t, base+"/api/v1/devices/sensor-1", admin, &d)
		if d.MessageCount != 6 {
			return fmt.Errorf("sensor-1 has %d messages, want 6", d.MessageCount)
		}
		return nil
	})
	if s := m.Stats.Snapshot(); s.Refused[devices.RefusedBadCredentials] < 5 {
		t.Fatalf("bad credentials counted %d times, want at least 5", s.Refused[devices.RefusedBadCredentials])
	}
}

func getJSONAuth(tb testing.TB, url, token string, v any) {
	tb.Helper()
	code, body := request(tb, "GET", url, token, "")
	if code != 200 {
		tb.Fatalf("GET %s: %d %s", url, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		tb.Fatal(err)
	}
}

// testPKI is a throwaway CA with a server certificate for 127.0.0.1 and a
// client certificate, written as PEM files.
type testPKI struct {
	dir                       string
	caFile, certFile, keyFile string
	pool                      *x509.CertPool
	client                    tls.Certificate
}

func newTestPKI(t *testing.T, clientCN string) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir()}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "telehub test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	p.pool = x509.NewCertPool()
	p.pool.AddCert(ca)
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP) ([]byte, *ecdsa.PrivateKey) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: ips, KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(p.dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	p.caFile = write("ca.pem", "CERTIFICATE", caDER)
	srvDER, srvKey := issue(2, "127.0.0.1", x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)})
	p.certFile = write("server.pem", "CERTIFICATE", srvDER)
	keyDER, _ := x509.MarshalECPrivateKey(srvKey)
	p.keyFile = write("server-key.pem", "EC PRIVATE KEY", keyDER)
	cliDER, cliKey := issue(3, clientCN, x509.ExtKeyUsageClientAuth, nil)
	p.client = tls.Certificate{Certificate: [][]byte{cliDER}, PrivateKey: cliKey}
	return p
}

// TestSecurity_TLS: MQTT over TLS, plain MQTT refused on the TLS port, a
// device authenticated by its client certificate's common name, and HTTPS.
func TestSecurity_TLS(t *testing.T) {
	pki := newTestPKI(t, "meter-7")
	m := MustRunMain(t, func(c *Config) {
		c.MQTTSAddr, c.MQTTTLSCert, c.MQTTTLSKey, c.MQTTTLSClientCA = "127.0.0.1:0", pki.certFile, pki.keyFile, pki.caFile
		c.HTTPTLSCert, c.HTTPTLSKey = pki.certFile, pki.keyFile
		c.DeviceAuth = true
	})
	tlsAddr := m.Broker.TLSListenAddr()

	// Plain MQTT to the TLS listener: no CONNACK.
	plain := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + tlsAddr).SetClientID("plain").
		SetAutoReconnect(false).SetProtocolVersion(4).SetConnectTimeout(2 * time.Second))
	if tok := plain.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
		t.Fatal("plain MQTT connected to the TLS listener")
	}

	// A client certificate is the device's credential: no token needed,
	// and it may publish as meter-7 only.
	tc := &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{pki.client}, MinVersion: tls.VersionTLS12}
	dev := paho.NewClient(paho.NewClientOptions().AddBroker("ssl://" + tlsAddr).SetClientID("meter-7").
		SetTLSConfig(tc).SetAutoReconnect(false).SetProtocolVersion(4))
	if tok := dev.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("mTLS connect: %v", tok.Error())
	}
	defer dev.Disconnect(0)
	if n := publishN(t, dev, "meter-7", 3); n != 3 {
		t.Fatalf("%d of 3 acknowledged over TLS", n)
	}
	waitStored(t, m, 3)

	// Without a client certificate or token, TLS alone is not enough.
	anon := paho.NewClient(paho.NewClientOptions().AddBroker("ssl://" + tlsAddr).SetClientID("anon").
		SetTLSConfig(&tls.Config{RootCAs: pki.pool}).SetAutoReconnect(false).SetProtocolVersion(4))
	if tok := anon.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
		t.Fatal("connected over TLS without credentials under --device-auth")
	}

	// HTTPS, with HSTS.
	if !strings.HasPrefix(m.HTTP.URL(), "https://") {
		t.Fatalf("URL %s, want https", m.HTTP.URL())
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.pool}}}
	resp, err := client.Get(m.HTTP.URL() + "/api/v1/devices/meter-7")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Strict-Transport-Security") == "" {
		t.Fatalf("HTTPS: %d, HSTS %q", resp.StatusCode, resp.Header.Get("Strict-Transport-Security"))
	}
	if _, err := http.Get("http://" + m.HTTP.ListenAddr() + "/healthz"); err == nil {
		t.Fatal("plain HTTP answered on the HTTPS port")
	}
}
