package dashboard

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/utils"

	"github.com/telehub/telehub/devices"
)

// exportPage is how many messages the export reads per query; memory stays
// flat however many rows are exported.
const exportPage = 1000

type exportOptions struct {
	format   string // csv or ndjson
	device   string // "" for all devices
	from, to int64
	metrics  []string
}

// handleExport serves GET /api/v1/export?format=csv|ndjson&device=&from=&to=&metrics=:
// every matching message, streamed as it is read (no row cap, constant
// memory), as a file download. With metrics, rows carry those metrics'
// values instead of the raw payload. One device streams in ts order; all
// devices stream in seq order. A client that disconnects stops the query.
func (s *Server) handleExport(c *fiber.Ctx) error {
	o := exportOptions{format: c.Query("format", "csv")}
	if o.format != "csv" && o.format != "ndjson" {
		return invalid("format", "want csv or ndjson, got %q", o.format)
	}
	if d := c.Query("device"); d != "" {
		if err := devices.ValidateDeviceID(d); err != nil {
			return invalid("device", "%s", strings.TrimPrefix(err.Error(), devices.ErrInvalid.Error()+": "))
		}
		o.device = utils.CopyString(d)
		if _, err := s.Messages.FindDevice(c.UserContext(), o.device); err != nil {
			return err
		}
	}
	var err error
	if o.from, o.to, err = timeRange(c); err != nil {
		return err
	}
	if v := c.Query("metrics"); v != "" {
		for _, m := range strings.Split(v, ",") {
			if m = strings.TrimSpace(m); m == "" || len(m) > 128 {
				return invalid("metrics", "want comma-separated metric names")
			}
			o.metrics = append(o.metrics, utils.CopyString(m))
		}
		if len(o.metrics) > 100 {
			return invalid("metrics", "at most 100 metrics")
		}
	}

	name := "all"
	if o.device != "" {
		name = o.device
	}
	if o.format == "csv" {
		c.Set(fiber.HeaderContentType, "text/csv; charset=utf-8")
	} else {
		c.Set(fiber.HeaderContentType, "application/x-ndjson")
	}
	c.Set(fiber.HeaderContentDisposition, fmt.Sprintf(`attachment; filename="telehub-%s.%s"`, name, o.format))
	// The stream runs after this handler returns, so it gets its own
	// context, ended when writing to the client fails.
	c.Context().SetBodyStreamWriter(func(w *bufio.Writer) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := s.export(ctx, w, o); err != nil && !errors.Is(err, errClientGone) {
			s.Logger.Error("export failed", "error", err)
		}
	})
	return nil
}

var errClientGone = errors.New("client gone")

func (s *Server) export(ctx context.Context, bw *bufio.Writer, o exportOptions) error {
	var cw *csv.Writer
	if o.format == "csv" {
		cw = csv.NewWriter(bw)
		head := []string{"seq", "device", "ts", "received"}
		if len(o.metrics) > 0 {
			head = append(head, o.metrics...)
		} else {
			head = append(head, "topic", "encoding", "payload")
		}
		cw.Write(head)
	}
	n := 0
	emit := func(m *devices.Message) error {
		if m.TS < o.from || m.TS > o.to {
			return nil
		}
		if cw != nil {
			cw.Write(csvRow(m, o.metrics))
		} else {
			bw.Write(ndjsonLine(m, o.metrics))
		}
		if n++; n%exportPage == 0 {
			return flush(bw, cw)
		}
		return nil
	}
	var err error
	if o.device == "" {
		err = s.Messages.Replay(ctx, "", 0, s.Messages.LastSeq(), emit)
	} else {
		f := devices.MessageFilter{Device: o.device, From: o.from, To: o.to, Limit: exportPage}
		for {
			var page []devices.Message
			if page, err = s.Messages.ListMessages(ctx, f); err != nil {
				break
			}
			for i := range page {
				if err = emit(&page[i]); err != nil {
					break
				}
			}
			if err != nil || len(page) < exportPage {
				break
			}
			last := page[len(page)-1]
			f.After = &devices.Position{TS: last.TS, Seq: last.Seq}
		}
	}
	if err != nil {
		return err
	}
	return flush(bw, cw)
}

func flush(bw *bufio.Writer, cw *csv.Writer) error {
	if cw != nil {
		cw.Flush()
	}
	if err := bw.Flush(); err != nil {
		return errClientGone
	}
	return nil
}

// metricValues returns the named metrics of m's payload, as raw JSON.
func metricValues(m *devices.Message) map[string]json.RawMessage {
	if m.Kind == devices.KindStatus || !m.IsJSON() {
		return nil
	}
	_, values, _ := devices.DecodePayload(m.Payload, m.Received)
	out := make(map[string]json.RawMessage, len(values))
	for _, v := range values {
		out[v.Name] = v.Value
	}
	return out
}

// textCell keeps a cell that holds text from a device from being read as a
// formula by a spreadsheet (CSV injection): one that starts with = + - @
// or a tab or carriage return gets a leading apostrophe, which spreadsheets
// show as text. Numbers are never passed through it.
func textCell(s string) string {
	if s != "" && strings.IndexByte("=+-@\t\r", s[0]) >= 0 {
		return "'" + s
	}
	return s
}

func csvRow(m *devices.Message, metrics []string) []string {
	row := []string{strconv.FormatInt(int64(m.Seq), 10), textCell(m.Device), strconv.FormatInt(m.TS, 10), strconv.FormatInt(m.Received, 10)}
	if len(metrics) == 0 {
		enc, payload := "json", string(m.Payload)
		if m.IsText() {
			enc, payload = "text", textCell(payload)
		} else if !m.IsJSON() {
			enc, payload = "base64", textCell(base64String(m.Payload))
		} else if payload != "" && payload[0] != '-' {
			payload = textCell(payload) // JSON starting with '-' is a number
		}
		return append(row, textCell(m.Topic), enc, payload)
	}
	vals := metricValues(m)
	for _, name := range metrics {
		raw := vals[name]
		var str string
		if len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &str) == nil {
			row = append(row, textCell(str))
		} else {
			row = append(row, string(raw))
		}
	}
	return row
}

func ndjsonLine(m *devices.Message, metrics []string) []byte {
	if len(metrics) == 0 {
		return append(m.AppendJSON(nil), '\n')
	}
	vals := metricValues(m)
	line := struct {
		Seq      devices.Seq                `json:"seq"`
		Device   string                     `json:"device"`
		TS       int64                      `json:"ts"`
		Received int64                      `json:"received"`
		Values   map[string]json.RawMessage `json:"values"`
	}{m.Seq, m.Device, m.TS, m.Received, map[string]json.RawMessage{}}
	for _, name := range metrics {
		if v, ok := vals[name]; ok {
			line.Values[name] = v
		}
	}
	b, _ := json.Marshal(line)
	return append(b, '\n')
}

func base64String(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
