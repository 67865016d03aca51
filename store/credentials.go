package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/telehub/telehub/devices"
)

// Credentials implements devices.CredentialService in SQL that both
// backends run as it is (through database/sql; parameters as $1, $2).
// Lookups use ReadDB; the rare writes use WriteDB, which in SQLite is a
// connection of its own, so that they work from another process (the CLI)
// while the hub runs.
type Credentials struct {
	ReadDB, WriteDB *sql.DB
	// Now is the clock of the created times. Default time.Now.
	Now func() time.Time
	// IsUnique reports a PRIMARY KEY or UNIQUE constraint failure of the
	// backend's driver.
	IsUnique func(error) bool
}

var _ devices.CredentialService = (*Credentials)(nil)

func (c *Credentials) now() int64 {
	if c.Now == nil {
		return time.Now().UnixMilli()
	}
	return c.Now().UnixMilli()
}

func (c *Credentials) isUniqueViolation(err error) bool { return err != nil && c.IsUnique(err) }

// AddDevice implements devices.CredentialService.
func (c *Credentials) AddDevice(ctx context.Context, device string) (string, error) {
	if err := devices.ValidateDeviceID(device); err != nil {
		return "", err
	}
	token := devices.NewToken(devices.DeviceTokenPrefix)
	_, err := c.WriteDB.ExecContext(ctx, `INSERT INTO device_credentials (device, token_hash, created) VALUES ($1, $2, $3)`,
		device, devices.HashToken(token), c.now())
	if c.isUniqueViolation(err) {
		return "", fmt.Errorf("device %q already has a credential (rotate it instead): %w", device, devices.ErrConflict)
	} else if err != nil {
		return "", fmt.Errorf("add device credential: %w", err)
	}
	return token, nil
}

// RotateDevice implements devices.CredentialService.
func (c *Credentials) RotateDevice(ctx context.Context, device string) (string, error) {
	token := devices.NewToken(devices.DeviceTokenPrefix)
	res, err := c.WriteDB.ExecContext(ctx, `UPDATE device_credentials SET token_hash = $1, created = $2 WHERE device = $3`,
		devices.HashToken(token), c.now(), device)
	if err != nil {
		return "", fmt.Errorf("rotate device credential: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return "", fmt.Errorf("device %q has no credential: %w", device, devices.ErrNotFound)
	}
	return token, nil
}

// RevokeDevice implements devices.CredentialService.
func (c *Credentials) RevokeDevice(ctx context.Context, device string) error {
	res, err := c.WriteDB.ExecContext(ctx, `DELETE FROM device_credentials WHERE device = $1`, device)
	if err != nil {
		return fmt.Errorf("revoke device credential: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("device %q has no credential: %w", device, devices.ErrNotFound)
	}
	return nil
}

// DeviceCredentials implements devices.CredentialService.
func (c *Credentials) DeviceCredentials(ctx context.Context) ([]devices.Credential, error) {
	rows, err := c.ReadDB.QueryContext(ctx, `SELECT device, created FROM device_credentials ORDER BY device`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []devices.Credential{}
	for rows.Next() {
		var cr devices.Credential
		if err := rows.Scan(&cr.Device, &cr.Created); err != nil {
			return nil, err
		}
		out = append(out, cr)
	}
	return out, rows.Err()
}

// AuthenticateDevice implements devices.CredentialService.
func (c *Credentials) AuthenticateDevice(ctx context.Context, token string) (string, error) {
	if !strings.HasPrefix(token, devices.DeviceTokenPrefix) {
		return "", devices.ErrUnauthorized
	}
	var device string
	err := c.ReadDB.QueryRowContext(ctx, `SELECT device FROM device_credentials WHERE token_hash = $1`, devices.HashToken(token)).Scan(&device)
	if errors.Is(err, sql.ErrNoRows) {
		return "", devices.ErrUnauthorized
	}
	return device, err
}

// AddToken implements devices.CredentialService.
func (c *Credentials) AddToken(ctx context.Context, name string, scope devices.Scope) (string, error) {
	if err := devices.ValidateTokenName(name); err != nil {
		return "", err
	}
	if _, err := devices.ParseScope(string(scope)); err != nil {
		return "", err
	}
	token := devices.NewToken(devices.APITokenPrefix)
	_, err := c.WriteDB.ExecContext(ctx, `INSERT INTO api_tokens (name, token_hash, scope, created) VALUES ($1, $2, $3, $4)`,
		name, devices.HashToken(token), string(scope), c.now())
	if c.isUniqueViolation(err) {
		return "", fmt.Errorf("a token named %q exists: %w", name, devices.ErrConflict)
	} else if err != nil {
		return "", fmt.Errorf("add token: %w", err)
	}
	return token, nil
}

// RevokeToken implements devices.CredentialService.
func (c *Credentials) RevokeToken(ctx context.Context, name string) error {
	res, err := c.WriteDB.ExecContext(ctx, `DELETE FROM api_tokens WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("revoke token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("no token named %q: %w", name, devices.ErrNotFound)
	}
	return nil
}

// Tokens implements devices.CredentialService.
func (c *Credentials) Tokens(ctx context.Context) ([]devices.APIToken, error) {
	rows, err := c.ReadDB.QueryContext(ctx, `SELECT name, scope, created FROM api_tokens ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []devices.APIToken{}
	for rows.Next() {
		var t devices.APIToken
		if err := rows.Scan(&t.Name, &t.Scope, &t.Created); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// HasTokens implements devices.CredentialService.
func (c *Credentials) HasTokens(ctx context.Context) (bool, error) {
	var ok bool
	err := c.ReadDB.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM api_tokens)`).Scan(&ok)
	return ok, err
}

// AuthenticateToken implements devices.CredentialService.
func (c *Credentials) AuthenticateToken(ctx context.Context, token string) (devices.APIToken, error) {
	var t devices.APIToken
	if !strings.HasPrefix(token, devices.APITokenPrefix) {
		return t, devices.ErrUnauthorized
	}
	err := c.ReadDB.QueryRowContext(ctx, `SELECT name, scope, created FROM api_tokens WHERE token_hash = $1`, devices.HashToken(token)).Scan(&t.Name, &t.Scope, &t.Created)
	if errors.Is(err, sql.ErrNoRows) {
		return t, devices.ErrUnauthorized
	}
	return t, err
}
