package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/simulator"
)

// checkHTTPExposure refuses to serve the API on a non-loopback address
// while anyone could use it: the user must configure a token (--api-token
// or 'telehub token add') or say --allow-anonymous.
func (m *Main) checkHTTPExposure() error {
	return checkHTTPExposure(m.Config, func() (bool, error) { return m.Store.HasTokens(context.Background()) })
}

// checkHTTPExposure is the rule, with hasTokens asked only when it matters.
func checkHTTPExposure(cfg Config, hasTokens func() (bool, error)) error {
	if isLoopback(cfg.HTTPAddr) || cfg.AllowAnonymous || cfg.APIToken != "" {
		return nil
	}
	has, err := hasTokens()
	if err != nil {
		return err
	}
	if !has {
		return fmt.Errorf("refusing to serve the API on %s without authentication: set --api-token (or create one with 'telehub token add NAME --scope admin'), or pass --allow-anonymous", cfg.HTTPAddr)
	}
	return nil
}

// demoTokens gives the demo devices fresh credentials, for --demo with
// --device-auth.
func (m *Main) demoTokens(prefix string, n int) ([]string, error) {
	ctx := context.Background()
	tokens := make([]string, n)
	for i := range tokens {
		id := simulator.DeviceID(prefix, i)
		tok, err := m.Store.RotateDevice(ctx, id)
		if errors.Is(err, devices.ErrNotFound) {
			tok, err = m.Store.AddDevice(ctx, id)
		}
		if err != nil {
			return nil, err
		}
		tokens[i] = tok
	}
	return tokens, nil
}

// mqttTLSConfig loads the broker's certificate and, with
// --mqtt-tls-client-ca, asks devices for client certificates signed by it
// (a device without one may still log in with its token).
func mqttTLSConfig(cfg Config) (*tls.Config, error) {
	tc, err := serverTLS(cfg.MQTTTLSCert, cfg.MQTTTLSKey)
	if err != nil {
		return nil, fmt.Errorf("--mqtt-tls-cert: %w", err)
	}
	if cfg.MQTTTLSClientCA != "" {
		pem, err := os.ReadFile(cfg.MQTTTLSClientCA)
		if err != nil {
			return nil, fmt.Errorf("--mqtt-tls-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--mqtt-tls-client-ca %s: no PEM certificate in it", cfg.MQTTTLSClientCA)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return tc, nil
}

func httpTLSConfig(cfg Config) (*tls.Config, error) {
	tc, err := serverTLS(cfg.HTTPTLSCert, cfg.HTTPTLSKey)
	if err != nil {
		return nil, fmt.Errorf("--http-tls-cert: %w", err)
	}
	return tc, nil
}

func serverTLS(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}
