package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/telehub/telehub/devices"
)

// Credentials implements devices.CredentialService on the database. Lookups
// use the read pool; the rare writes use a connection of their own, so they
// work from another process (the CLI) while the hub runs.
type Credentials struct {
	db *DB
}

var _ devices.CredentialService = (*Credentials)(nil)

// NewCredentials returns the credential store of an open db.
func NewCredentials(db *DB) *Credentials { return &Credentials{db: db} }

func (c *Credentials) now() int64 { return c.db.Now().UnixMilli() }

// AddDevice implements devices.CredentialService.
func (c *Credentials) AddDevice(ctx context.Context, device string) (string, error) {
	if err := devices.ValidateDeviceID(device); err != nil {
		return "", err
	}
	token := devices.NewToken(devices.DeviceTokenPrefix)
	_, err := c.db.admin.ExecContext(ctx, `INSERT INTO device_credentials (device, token_hash, created) VALUES (?, ?, ?)`,
		device, devices.HashToken(token), c.now())
	if isUniqueViolation(err) {
		return "", fmt.Errorf("device %q already has a credential (rotate it instead): %w", device, devices.ErrConflict)
	} else if err != nil {
		return "", fmt.Errorf("add device credential: %w", err)
	}
	return token, nil
}

// RotateDevice implements devices.CredentialService.
func (c *Credentials) RotateDevice(ctx context.Context, device string) (string, error) {
	token := devices.NewToken(devices.DeviceTokenPrefix)
	res, err := c.db.admin.ExecContext(ctx, `UPDATE device_credentials SET token_hash = ?, created = ? WHERE device = ?`,
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
	res, err := c.db.admin.ExecContext(ctx, `DELETE FROM device_credentials WHERE device = ?`, device)
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
	rows, err := c.db.read.QueryContext(ctx, `SELECT device, created FROM device_credentials ORDER BY device`)
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
	err := c.db.read.QueryRowContext(ctx, `SELECT device FROM device_credentials WHERE token_hash = ?`, devices.HashToken(token)).Scan(&device)
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
	_, err := c.db.admin.ExecContext(ctx, `INSERT INTO api_tokens (name, token_hash, scope, created) VALUES (?, ?, ?, ?)`,
		name, devices.HashToken(token), string(scope), c.now())
	if isUniqueViolation(err) {
		return "", fmt.Errorf("a token named %q exists: %w", name, devices.ErrConflict)
	} else if err != nil {
		return "", fmt.Errorf("add token: %w", err)
	}
	return token, nil
}

// RevokeToken implements devices.CredentialService.
func (c *Credentials) RevokeToken(ctx context.Context, name string) error {
	res, err := c.db.admin.ExecContext(ctx, `DELETE FROM api_tokens WHERE name = ?`, name)
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
	rows, err := c.db.read.QueryContext(ctx, `SELECT name, scope, created FROM api_tokens ORDER BY name`)
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
	err := c.db.read.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM api_tokens)`).Scan(&ok)
	return ok, err
}

// AuthenticateToken implements devices.CredentialService.
func (c *Credentials) AuthenticateToken(ctx context.Context, token string) (devices.APIToken, error) {
	var t devices.APIToken
	if !strings.HasPrefix(token, devices.APITokenPrefix) {
		return t, devices.ErrUnauthorized
	}
	err := c.db.read.QueryRowContext(ctx, `SELECT name, scope, created FROM api_tokens WHERE token_hash = ?`, devices.HashToken(token)).Scan(&t.Name, &t.Scope, &t.Created)
	if errors.Is(err, sql.ErrNoRows) {
		return t, devices.ErrUnauthorized
	}
	return t, err
}

// isUniqueViolation reports a PRIMARY KEY or UNIQUE constraint failure.
func isUniqueViolation(err error) bool {
	var se *msqlite.Error
	return errors.As(err, &se) && (se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE)
}
