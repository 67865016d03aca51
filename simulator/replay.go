package simulator

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/telehub/telehub/devices"
)

// ReplayConfig describes a replay of recorded readings.
type ReplayConfig struct {
	// Fleet supplies the broker, TLS, credentials, QoS and topic scheme.
	Fleet *Config
	// Speed divides the recorded gaps between rows: 1 is real time, 10 ten
	// times faster, 0 as fast as possible.
	Speed float64
}

// Row is one recorded reading.
type Row struct {
	TS     time.Time
	Device string
	Values map[string]any
}

// ReadCSV reads recorded readings: a header row with a timestamp column
// ("timestamp", "ts" or "time"; Unix ms or RFC 3339), a "device" column,
// and one column per metric. Numeric cells become numbers, "true"/"false"
// booleans, empty cells are left out, anything else is a string. Rows must
// be in time order.
func ReadCSV(r io.Reader) ([]Row, error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = false
	head, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("csv header: %w", err)
	}
	tsCol, devCol := -1, -1
	for i, h := range head {
		switch strings.ToLower(strings.TrimSpace(h)) {
		case "timestamp", "ts", "time":
			tsCol = i
		case "device":
			devCol = i
		}
	}
	if tsCol < 0 || devCol < 0 {
		return nil, errors.New(`csv header needs a "timestamp" and a "device" column`)
	}
	var rows []Row
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if err == io.EOF {
			return rows, nil
		}
		if err != nil {
			return nil, fmt.Errorf("csv line %d: %w", line, err)
		}
		ts, err := parseTime(rec[tsCol])
		if err != nil {
			return nil, fmt.Errorf("csv line %d: %w", line, err)
		}
		if len(rows) > 0 && ts.Before(rows[len(rows)-1].TS) {
			return nil, fmt.Errorf("csv line %d: timestamp before the previous row's", line)
		}
		dev := strings.TrimSpace(rec[devCol])
		if err := devices.ValidateDeviceID(dev); err != nil {
			return nil, fmt.Errorf("csv line %d: %w", line, err)
		}
		row := Row{TS: ts, Device: dev, Values: map[string]any{}}
		for i, cell := range rec {
			if i == tsCol || i == devCol || strings.TrimSpace(cell) == "" {
				continue
			}
			row.Values[strings.TrimSpace(head[i])] = cellValue(strings.TrimSpace(cell))
		}
		rows = append(rows, row)
	}
}

func parseTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(n), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("timestamp %q: want Unix ms or RFC 3339", s)
	}
	return t, nil
}

func cellValue(s string) any {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return f
	}
	if b, err := strconv.ParseBool(s); err == nil && (s == "true" || s == "false") {
		return b
	}
	return s
}

// Replay publishes rows with their recorded timestamps ("ts"), keeping the
// recorded gaps divided by Speed, one MQTT connection per device. It returns
// how many rows were published and acknowledged (QoS 1, 2).
func Replay(ctx context.Context, rc ReplayConfig, rows []Row) (sent, acked int, err error) {
	cfg := rc.Fleet
	if cfg.Scheme == nil {
		cfg.Scheme = devices.DefaultScheme()
	}
	clients := map[string]paho.Client{}
	defer func() {
		for _, c := range clients {
			c.Disconnect(250)
		}
	}()
	var pending []paho.Token
	start := time.Now()
	for _, row := range rows {
		if rc.Speed > 0 {
			due := start.Add(time.Duration(float64(row.TS.Sub(rows[0].TS)) / rc.Speed))
			select {
			case <-ctx.Done():
				return sent, acked, ctx.Err()
			case <-time.After(time.Until(due)):
			}
		}
		c, ok := clients[row.Device]
		if !ok {
			o := paho.NewClientOptions().AddBroker(cfg.Broker).SetClientID(cfg.IDPrefix + "-replay-" + row.Device).
				SetUsername(cfg.Username).SetPassword(cfg.Password).SetCleanSession(true).SetAutoReconnect(true)
			c = paho.NewClient(o)
			if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				return sent, acked, fmt.Errorf("connect %s for %s: %v", cfg.Broker, row.Device, tok.Error())
			}
			clients[row.Device] = c
		}
		v := make(map[string]any, len(row.Values)+1)
		for k, x := range row.Values {
			v[k] = x
		}
		v["ts"] = row.TS.UnixMilli()
		b, _ := json.Marshal(v)
		pending = append(pending, c.Publish(cfg.Scheme.Topic(row.Device, devices.KindTelemetry), cfg.QoS, false, b))
		sent++
	}
	for _, tok := range pending {
		if tok.WaitTimeout(30*time.Second) && tok.Error() == nil {
			acked++
		}
	}
	return sent, acked, nil
}
