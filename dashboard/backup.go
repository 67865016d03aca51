package dashboard

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/gofiber/fiber/v2"
)

// Backuper writes a consistent copy of the database to a new file. The
// SQLite store (sqlite.Store) implements it.
type Backuper interface {
	Backup(ctx context.Context, path string) error
}

// handleBackup serves POST /api/v1/backup (admin): a consistent, compacted
// copy of the database, taken while the hub runs, as a download. The copy is
// written next to the system's temporary files and removed once sent.
func (s *Server) handleBackup(c *fiber.Ctx) error {
	if s.Backup == nil {
		return fiber.NewError(fiber.StatusNotImplemented, "backup is not available")
	}
	dir, err := os.MkdirTemp("", "telehub-backup-")
	if err != nil {
		return err
	}
	path := filepath.Join(dir, "telehub.db")
	if err := s.Backup.Backup(c.UserContext(), path); err != nil {
		os.RemoveAll(dir)
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		os.RemoveAll(dir)
		return err
	}
	os.RemoveAll(dir) // the open file stays readable until it is closed
	s.Logger.Info("backup sent", "bytes", fi.Size())
	c.Set(fiber.HeaderContentType, "application/vnd.sqlite3")
	c.Set(fiber.HeaderContentDisposition, fmt.Sprintf(`attachment; filename="telehub-%s.db"`, time.Now().UTC().Format("20060102-150405")))
	return c.SendStream(f, int(fi.Size())) // fasthttp closes f when sent
}
