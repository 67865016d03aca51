package devices

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
)

// Token prefixes tell the two kinds apart at a glance (and to secret
// scanners): a device token authenticates one device to the broker, an API
// token a person or program to the REST API and WebSocket.
const (
	DeviceTokenPrefix = "thd_"
	APITokenPrefix    = "tha_"
)

// NewToken returns prefix followed by 256 random bits, base64url-encoded.
func NewToken(prefix string) string {
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand since Go 1.24)
	return prefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// HashToken returns the SHA-256 of a token: what is stored and looked up.
// Tokens carry 256 random bits, so a slow password hash would add nothing.
func HashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// Scope is what an API token may do.
type Scope string

// The scopes: read may GET everything and open the WebSocket; admin may
// also create, change and delete.
const (
	ScopeRead  Scope = "read"
	ScopeAdmin Scope = "admin"
)

// ParseScope returns the Scope named s, or an error wrapping ErrInvalid.
func ParseScope(s string) (Scope, error) {
	switch Scope(s) {
	case ScopeRead, ScopeAdmin:
		return Scope(s), nil
	}
	return "", fmt.Errorf("%w: unknown scope %q (want read or admin)", ErrInvalid, s)
}

// Allows reports whether a token of scope s may do what needs scope need.
func (s Scope) Allows(need Scope) bool { return s == ScopeAdmin || s == need }

// Credential describes a device's credential, without its secret.
type Credential struct {
	Device  string `json:"device"`
	Created int64  `json:"created"` // Unix ms
}

// APIToken describes an API token, without its secret.
type APIToken struct {
	Name    string `json:"name"`
	Scope   Scope  `json:"scope"`
	Created int64  `json:"created"` // Unix ms
}

// ValidateTokenName checks an API token's name: the same characters as a
// device id.
func ValidateTokenName(name string) error {
	if err := ValidateDeviceID(name); err != nil {
		return fmt.Errorf("%w: token name must be 1 to %d letters, digits, '-', '_' or '.'", ErrInvalid, MaxDeviceIDLen)
	}
	return nil
}

// CredentialService provisions and checks secrets. Only hashes are stored;
// a token is shown once, when it is made.
type CredentialService interface {
	// AddDevice makes a credential for a device that has none (ErrConflict
	// otherwise) and returns its token.
	AddDevice(ctx context.Context, device string) (token string, err error)
	// RotateDevice replaces a device's token (ErrNotFound without one).
	RotateDevice(ctx context.Context, device string) (token string, err error)
	// RevokeDevice deletes a device's credential (ErrNotFound without one).
	RevokeDevice(ctx context.Context, device string) error
	// DeviceCredentials lists the devices that have a credential.
	DeviceCredentials(ctx context.Context) ([]Credential, error)
	// AuthenticateDevice returns the device a token belongs to, or
	// ErrUnauthorized.
	AuthenticateDevice(ctx context.Context, token string) (device string, err error)

	// AddToken makes an API token (ErrConflict when the name is taken).
	AddToken(ctx context.Context, name string, scope Scope) (token string, err error)
	// RevokeToken deletes an API token (ErrNotFound when there is none).
	RevokeToken(ctx context.Context, name string) error
	// Tokens lists the API tokens.
	Tokens(ctx context.Context) ([]APIToken, error)
	// HasTokens reports whether any API token exists.
	HasTokens(ctx context.Context) (bool, error)
	// AuthenticateToken returns the API token a secret belongs to, or
	// ErrUnauthorized.
	AuthenticateToken(ctx context.Context, token string) (APIToken, error)
}
