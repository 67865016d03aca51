package sqlite_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/telehub/telehub/devices"
	"github.com/telehub/telehub/store/sqlite"
	"github.com/telehub/telehub/store/storetest"
)

func TestCredentials_Devices(t *testing.T) {
	db := MustOpenDB(t)
	c := sqlite.NewCredentials(db)
	ctx := context.Background()

	tok, err := c.AddDevice(ctx, "kitchen")
	if err != nil || !strings.HasPrefix(tok, devices.DeviceTokenPrefix) || len(tok) < 40 {
		t.Fatalf("add: %q, %v", tok, err)
	}
	if dev, err := c.AuthenticateDevice(ctx, tok); err != nil || dev != "kitchen" {
		t.Fatalf("authenticate: %q, %v", dev, err)
	}
	if _, err := c.AddDevice(ctx, "kitchen"); !errors.Is(err, devices.ErrConflict) {
		t.Fatalf("second add: %v, want ErrConflict", err)
	}
	if _, err := c.AddDevice(ctx, "bad id"); !errors.Is(err, devices.ErrInvalid) {
		t.Fatalf("bad id: %v, want ErrInvalid", err)
	}
	for _, bad := range []string{"", "thd_", "thd_nope", tok + "x", strings.Replace(tok, devices.DeviceTokenPrefix, devices.APITokenPrefix, 1)} {
		if _, err := c.AuthenticateDevice(ctx, bad); !errors.Is(err, devices.ErrUnauthorized) {
			t.Fatalf("authenticate %q: %v, want ErrUnauthorized", bad, err)
		}
	}

	// Only the hash is on disk.
	raw := storetest.RawDB(t, db.Path)
	var n int
	raw.QueryRow(`SELECT count(*) FROM device_credentials WHERE token_hash = ? OR CAST(token_hash AS TEXT) = ?`, tok, tok).Scan(&n)
	if n != 0 {
		t.Fatal("the token is stored in clear")
	}

	rotated, err := c.RotateDevice(ctx, "kitchen")
	if err != nil || rotated == tok {
		t.Fatalf("rotate: %q, %v", rotated, err)
	}
	if _, err := c.AuthenticateDevice(ctx, tok); !errors.Is(err, devices.ErrUnauthorized) {
		t.Fatalf("old token after rotation: %v, want ErrUnauthorized", err)
	}
	if dev, _ := c.AuthenticateDevice(ctx, rotated); dev != "kitchen" {
		t.Fatalf("new token authenticates as %q", dev)
	}
	list, err := c.DeviceCredentials(ctx)
	if err != nil || len(list) != 1 || list[0].Device != "kitchen" || list[0].Created == 0 {
		t.Fatalf("list: %+v, %v", list, err)
	}
	if err := c.RevokeDevice(ctx, "kitchen"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AuthenticateDevice(ctx, rotated); !errors.Is(err, devices.ErrUnauthorized) {
		t.Fatalf("revoked token: %v, want ErrUnauthorized", err)
	}
	if err := c.RevokeDevice(ctx, "kitchen"); !errors.Is(err, devices.ErrNotFound) {
		t.Fatalf("second revoke: %v, want ErrNotFound", err)
	}
	if _, err := c.RotateDevice(ctx, "kitchen"); !errors.Is(err, devices.ErrNotFound) {
		t.Fatalf("rotate revoked: %v, want ErrNotFound", err)
	}
}

func TestCredentials_Tokens(t *testing.T) {
	c := sqlite.NewCredentials(MustOpenDB(t))
	ctx := context.Background()
	if has, err := c.HasTokens(ctx); has || err != nil {
		t.Fatalf("HasTokens before any: %v, %v", has, err)
	}
	admin, err := c.AddToken(ctx, "ops", devices.ScopeAdmin)
	if err != nil || !strings.HasPrefix(admin, devices.APITokenPrefix) {
		t.Fatalf("add: %q, %v", admin, err)
	}
	read, _ := c.AddToken(ctx, "grafana", devices.ScopeRead)
	if has, _ := c.HasTokens(ctx); !has {
		t.Fatal("HasTokens false after adding two")
	}
	if tk, err := c.AuthenticateToken(ctx, read); err != nil || tk.Name != "grafana" || tk.Scope != devices.ScopeRead {
		t.Fatalf("authenticate read: %+v, %v", tk, err)
	}
	if _, err := c.AddToken(ctx, "ops", devices.ScopeRead); !errors.Is(err, devices.ErrConflict) {
		t.Fatalf("duplicate name: %v", err)
	}
	if _, err := c.AddToken(ctx, "x", "root"); !errors.Is(err, devices.ErrInvalid) {
		t.Fatalf("bad scope: %v", err)
	}
	if _, err := c.AuthenticateToken(ctx, "tha_guess"); !errors.Is(err, devices.ErrUnauthorized) {
		t.Fatalf("guess: %v", err)
	}
	if list, _ := c.Tokens(ctx); len(list) != 2 || list[0].Name != "grafana" || list[1].Scope != devices.ScopeAdmin {
		t.Fatalf("list: %+v", list)
	}
	if err := c.RevokeToken(ctx, "ops"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AuthenticateToken(ctx, admin); !errors.Is(err, devices.ErrUnauthorized) {
		t.Fatalf("revoked: %v", err)
	}
}
