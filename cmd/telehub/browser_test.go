package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/telehub/telehub/simulator"
)

// browser is a headless Chromium tab that records every console error and
// uncaught exception of the pages it shows.
type browser struct {
	ctx context.Context

	mu        sync.Mutex
	errors    []string
	tolerated int  // network errors seen while the hub was down on purpose
	hubDown   bool // while true, failed requests to the hub are expected
}

// newBrowser starts Debian's chromium, or skips (fails under
// TELEHUB_REQUIRE_TOOLS) where it is missing.
func newBrowser(t testing.TB) *browser {
	t.Helper()
	exe := requireTool(t, "chromium", "apt-get install chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	b := &browser{ctx: ctx}
	// The first Run starts the browser; it must not carry a timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				b.record(fmt.Sprintf("%s (%s %s)", m, m.Source, m.URL), m.Source == "network")
			}
		}
	}()
	return b
}

func (b *browser) record(msg string, network bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	// While the hub restarts, the page's reconnect attempts fail and Chromium
	// logs them; that is the behaviour under test, not a page error.
	if b.hubDown && (network || strings.Contains(msg, "WebSocket")) {
		b.tolerated++
		return
	}
	b.errors = append(b.errors, msg)
}

func (b *browser) setHubDown(down bool) {
	b.mu.Lock()
	b.hubDown = down
	b.mu.Unlock()
}

// checkNoErrors fails the test for any console error or exception so far.
func (b *browser) checkNoErrors(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.errors) > 0 {
		t.Fatalf("the page logged %d errors:\n%s", len(b.errors), strings.Join(b.errors, "\n"))
	}
}

// run runs the actions, each within 30 seconds.
func (b *browser) run(t testing.TB, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	for i, a := range actions {
		ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
		start := time.Now()
		err := chromedp.Do(ctx, a)
		cancel()
		if err != nil {
			t.Fatalf("browser action %d of %d: %v", i+1, len(actions), err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Logf("browser action %d of %d took %v", i+1, len(actions), took.Round(time.Millisecond))
		}
	}
}

// goHash moves the page, on the dashboard already, to another of its views
// by its fragment. chromedp.Navigate to the same document with another
// fragment at times waits for a load that never comes, about 30 s.
func goHash(hash string) chromedp.Action[chromedp.Void] {
	set := chromedp.Evaluate[string](`location.hash = ` + strconv.Quote(hash))
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := set(ctx, t)
		return chromedp.Void{}, err
	}
}

// text returns the text of the first element sel matches.
func (b *browser) text(t *testing.T, sel string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// screenshot saves the page as a PNG under TELEHUB_ARTIFACTS (default: a
// telehub-artifacts folder in the system temp dir) and logs the path.
func (b *browser) screenshot(t *testing.T, name string) {
	t.Helper()
	dir := os.Getenv("TELEHUB_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "telehub-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// pageState is what DeviceView.snapshot() in app.js returns.
type pageState struct {
	Device string
	Seq    int64
	Live   bool
	Charts map[string]struct {
		Xs, Ys, Ns []float64
		Drawn      bool
		Latest     string   // the header's latest value
		YAxis      float64  // width of the y axis, CSS px
		YLabels    []string // its labels
		Alerts     []int64  // the alerts marked on it
	}
	Log []int64
}

// waitPage polls the device view's state until ok accepts it.
func (b *browser) waitPage(t *testing.T, what string, ok func(*pageState) error) *pageState {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := chromedp.Run(b.ctx, chromedp.Evaluate[*pageState](`window.telehub && window.telehub.view && window.telehub.view.snapshot ? window.telehub.view.snapshot() : null`))
		if err == nil && st != nil {
			err = ok(st)
		} else if err == nil {
			err = fmt.Errorf("no device view")
		}
		if err == nil {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// publishReadings publishes one {"temp":v,"ts":ts} per pair with QoS 1 and
// waits for every PUBACK.
func publishReadings(t *testing.T, c paho.Client, device string, ts []int64, temp []int) {
	t.Helper()
	toks := make([]paho.Token, len(ts))
	for i := range ts {
		toks[i] = c.Publish("devices/"+device+"/telemetry", 1, false, fmt.Sprintf(`{"temp":%d,"hum":%d.5,"ts":%d}`, temp[i], 40+i, ts[i]))
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
}

// TestBrowser_Dashboard drives the dashboard in headless Chromium: the
// device list shows a device and picks up a new one, the device view charts
// the history and then the live readings, the raw log shows payloads, and
// after the hub restarts the page reconnects and resumes with every reading
// drawn exactly once.
func TestBrowser_Dashboard(t *testing.T) {
	b := newBrowser(t)
	dbPath := filepath.Join(t.TempDir(), "telehub.db")
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	mqttAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	hub := func() *Main {
		return MustRunMain(t, func(c *Config) { c.DB, c.HTTPAddr, c.MQTTAddr = dbPath, httpAddr, mqttAddr })
	}
	m := hub()
	c := mqttConnect(t, m.Broker.URL(), "greenhouse-sensor")

	// Readings two seconds apart in the last five minutes: each falls into
	// its own bucket of the 5-minute view, so each is one chart point.
	base := time.Now().UnixMilli() / 1000 * 1000
	var wantTS []float64
	var wantTemp []float64
	readings := func(from int64, first, n int) ([]int64, []int) {
		var ts []int64
		var temp []int
		for i := 0; i < n; i++ {
			ts = append(ts, from+int64(i)*2000)
			temp = append(temp, first+i)
			wantTS = append(wantTS, float64(from+int64(i)*2000))
			wantTemp = append(wantTemp, float64(first+i))
		}
		return ts, temp
	}
	ts, temp := readings(base-200_000, 0, 30) // history
	publishReadings(t, c, "greenhouse", ts, temp)

	// The device list shows the device, then a new one without a reload.
	b.run(t,
		chromedp.Navigate(m.HTTP.URL()+"/"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-device="greenhouse"]`)),
	)
	publishN(t, c, "shed", 1)
	b.run(t, chromedp.WaitVisible(chromedp.CSS(`tr[data-device="shed"]`)))
	row := b.text(t, `tr[data-device="greenhouse"]`)
	if !strings.Contains(row, "temp 29") || !strings.Contains(row, "online") && !strings.Contains(row, "active") {
		t.Fatalf("greenhouse row %q: want its latest temp 29 and an active status", row)
	}
	b.screenshot(t, "dashboard-devices")

	// The device view: history first.
	b.run(t,
		chromedp.Click(chromedp.CSS(`tr[data-device="greenhouse"] a`)),
		chromedp.WaitVisible(chromedp.CSS(`section.chart[data-metric="temp"] canvas`)),
	)
	b.waitPage(t, "history", func(st *pageState) error {
		if !st.Live {
			return fmt.Errorf("not live yet")
		}
		return checkChart(st, "temp", wantTS, wantTemp)
	})

	// Then live readings, appended as they are committed.
	ts, temp = readings(base-100_000, 100, 10)
	publishReadings(t, c, "greenhouse", ts, temp)
	b.waitPage(t, "live readings", func(st *pageState) error { return checkChart(st, "temp", wantTS, wantTemp) })
	last := fmt.Sprintf(`table.log tr[data-seq="%d"]`, m.Store.LastSeq())
	b.run(t, chromedp.WaitVisible(chromedp.CSS(last)))
	if row := b.text(t, last); !strings.Contains(row, `"temp":109`) {
		t.Fatalf("the raw log shows the last message as %q, want its payload", row)
	}
	b.screenshot(t, "dashboard-device")

	// The hub restarts; the page reconnects and resumes from the last seq.
	m = b.restartHub(t, m, hub)
	c = mqttConnect(t, m.Broker.URL(), "greenhouse-sensor-2")
	ts, temp = readings(base-50_000, 200, 10)
	publishReadings(t, c, "greenhouse", ts, temp)
	st := b.waitPage(t, "readings after the restart", func(st *pageState) error { return checkChart(st, "temp", wantTS, wantTemp) })
	seen := map[int64]bool{}
	for _, seq := range st.Log {
		if seen[seq] {
			t.Fatalf("the raw log shows seq %d twice: %v", seq, st.Log)
		}
		seen[seq] = true
	}
	if st.Seq != int64(m.Store.LastSeq()) {
		t.Fatalf("page at seq %d, hub at %d", st.Seq, m.Store.LastSeq())
	}

	// Phone width, dark scheme: still renders, for a person to look at.
	b.run(t,
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
				Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
			})
			return err
		}),
		chromedp.Sleep(500*time.Millisecond),
	)
	b.screenshot(t, "dashboard-device-phone-dark")
	b.checkNoErrors(t)
	t.Logf("tolerated %d network errors while the hub restarted", b.tolerated)
}

// checkChart compares a chart's points with the readings published: each
// once, in time order, each a bucket of exactly one reading.
func checkChart(st *pageState, metric string, ts, values []float64) error {
	ch, ok := st.Charts[metric]
	if !ok {
		return fmt.Errorf("no %s chart (charts: %v)", metric, st.Charts)
	}
	if !ch.Drawn {
		return fmt.Errorf("%s chart not drawn", metric)
	}
	if len(ch.Xs) != len(ts) {
		return fmt.Errorf("%s chart has %d points, want %d", metric, len(ch.Xs), len(ts))
	}
	for i := range ts {
		if ch.Xs[i] != ts[i] || ch.Ys[i] != values[i] || ch.Ns[i] != 1 {
			return fmt.Errorf("%s point %d = (%v, %v, n=%v), want (%v, %v, n=1)", metric, i, ch.Xs[i], ch.Ys[i], ch.Ns[i], ts[i], values[i])
		}
	}
	return nil
}

// TestBrowser_Login: with an API token configured, the dashboard asks for
// it, keeps it only in the HttpOnly cookie, and then shows the devices.
func TestBrowser_Login(t *testing.T) {
	b := newBrowser(t)
	m := MustRunMain(t, func(c *Config) { c.APIToken = "config-admin-token-0123456789" })
	read, err := m.Store.AddToken(context.Background(), "viewer", "read")
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, mqttConnect(t, m.Broker.URL(), "pub"), "porch", 1)
	b.run(t,
		chromedp.Navigate(m.HTTP.URL()+"/"),
		chromedp.WaitVisible(chromedp.CSS(`form.login #token`)),
		chromedp.SendKeys(chromedp.CSS(`#token`), "tha_wrong"),
		chromedp.Click(chromedp.CSS(`form.login button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`form.login [role=alert]`)),
	)
	if _, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.getElementById('token').value = ''`)); err != nil {
		t.Fatal(err)
	}
	b.run(t,
		chromedp.SendKeys(chromedp.CSS(`#token`), read),
		chromedp.Click(chromedp.CSS(`form.login button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-device="porch"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#logout`)),
	)
	cookies, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.cookie`))
	if err != nil || cookies != "" {
		t.Fatalf("document.cookie = %q (%v): the token must not be readable by scripts", cookies, err)
	}
	b.screenshot(t, "dashboard-login-done")
	// A read token sees boards without the controls that change them.
	b.run(t, goHash("#/boards"), chromedp.WaitVisible(chromedp.CSS(`ul.boards a`)))
	if n, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](`document.querySelectorAll('button[data-action="new"], button[data-action="import"]').length`)); err != nil || n != 0 {
		t.Fatalf("the boards list offers a read token %d controls to make boards (%v)", n, err)
	}
	b.run(t, chromedp.Click(chromedp.CSS(`ul.boards a`)), chromedp.WaitVisible(chromedp.CSS(`section.panel`)))
	if n, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](`document.querySelectorAll('button[data-action="edit"]').length`)); err != nil || n != 0 {
		t.Fatalf("a board offers a read token Edit (%d, %v)", n, err)
	}
	// The failed login answered 401, which Chromium logs; that is expected.
	b.mu.Lock()
	var errs []string
	for _, e := range b.errors {
		if !strings.Contains(e, "401") {
			errs = append(errs, e)
		}
	}
	b.mu.Unlock()
	if len(errs) > 0 {
		t.Fatalf("page errors: %v", errs)
	}
}

// frameStats measures, inside the page, the intervals between animation
// frames for d (and long tasks, where Chromium reports them).
const frameStats = `new Promise((resolve) => {
  const gaps = []; let long = 0; let last = performance.now();
  try { new PerformanceObserver((l) => { long += l.getEntries().length; }).observe({ type: 'longtask', buffered: false }); } catch (_) {}
  const end = last + %d;
  function tick(now) {
    gaps.push(now - last); last = now;
    if (now < end) requestAnimationFrame(tick);
    else { gaps.sort((a, b) => a - b); resolve({ p50: gaps[Math.floor(gaps.length * 0.5)], p99: gaps[Math.floor(gaps.length * 0.99)], max: gaps[gaps.length - 1], frames: gaps.length, long }); }
  }
  requestAnimationFrame(tick);
})`

type frames struct {
	P50, P99, Max float64
	Frames, Long  int
}

// BenchmarkBrowser_Smooth: 100 simulated devices publish 10 messages a
// second each while headless Chromium shows the device list, then one
// device's view with live charts, then a board of 12 panels over them; it
// reports animation frame intervals
// (p50, p99, worst) and long tasks (over 50 ms) on each page. Headless
// Chromium shares the two cores with the hub and the devices.
//
//	go test -run '^$' -bench Browser_Smooth -benchtime 1x ./cmd/telehub
func BenchmarkBrowser_Smooth(b *testing.B) {
	m := MustRunMain(b)
	cfg := simulator.NewConfig()
	cfg.Broker, cfg.Devices, cfg.Rate, cfg.QoS, cfg.Duration = m.Broker.URL(), 100, 10, 1, 2*time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); simulator.Run(ctx, cfg) }()
	b.Cleanup(func() { cancel(); <-done })
	waitStored(b, m, 2000)

	br := newBrowser(b)
	measure := func(name string) frames {
		ctx, cancel := context.WithTimeout(br.ctx, 30*time.Second)
		defer cancel()
		f, err := chromedp.Run(ctx, chromedp.Evaluate[frames](fmt.Sprintf(frameStats, 5000), chromedp.EvalAwaitPromise))
		if err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		return f
	}
	br.run(b, chromedp.Navigate(m.HTTP.URL()+"/"), chromedp.WaitVisible(chromedp.CSS(`tr[data-device="sim-0100"]`)))
	list := measure("list")
	br.run(b, goHash("#/device/sim-0001?w=5m"), chromedp.WaitVisible(chromedp.CSS(`section.chart canvas`)))
	view := measure("device view")
	// A board of 12 panels over the 100 devices.
	var panels []string
	for i := 0; i < 6; i++ {
		metric := []string{"temp", "hum"}[i%2]
		panels = append(panels, fmt.Sprintf(`{"kind":"timeseries","x":%d,"y":%d,"w":6,"h":4,"series":[{"device_prefix":"sim-00%d","metric":"%s"}]}`, (i%2)*6, (i/2)*4, i, metric))
	}
	for i := 0; i < 3; i++ {
		panels = append(panels, fmt.Sprintf(`{"kind":"stat","x":%d,"y":12,"w":4,"h":2,"device":"sim-00%d1","metric":"temp","decimals":1}`, i*4, i))
	}
	panels = append(panels, `{"kind":"table","x":0,"y":14,"w":6,"h":5,"device_prefix":"sim-"}`, `{"kind":"table","x":6,"y":14,"w":6,"h":5,"device_prefix":"sim-005","columns":["hum"]}`,
		`{"kind":"status","x":0,"y":19,"w":12,"h":4,"device_prefix":"sim-"}`)
	code, body := request(b, "POST", m.HTTP.URL()+"/api/v1/boards", "", `{"name":"Load","window":"5m","panels":[`+strings.Join(panels, ",")+`]}`)
	if code != http.StatusCreated {
		b.Fatalf("board: %d %s", code, body)
	}
	var board struct{ ID int64 }
	json.Unmarshal([]byte(body), &board)
	// The hub's cost of serving the board: this process's CPU (hub and
	// simulated devices) while the board is open, less the same span with
	// the page away from the hub.
	br.run(b, chromedp.Navigate("about:blank"), chromedp.Sleep(time.Second))
	cpu0, wall0 := processCPU(b), time.Now()
	time.Sleep(5 * time.Second)
	idle := float64(processCPU(b)-cpu0) / float64(time.Since(wall0))
	br.run(b, chromedp.Navigate(fmt.Sprintf("%s/#/board/%d", m.HTTP.URL(), board.ID)), chromedp.WaitVisible(chromedp.CSS(`section.panel[data-kind="timeseries"] canvas`)))
	cpu1, wall1 := processCPU(b), time.Now()
	boardFrames := measure("board")
	open := float64(processCPU(b)-cpu1) / float64(time.Since(wall1))
	b.ReportMetric((open-idle)*100, "board-hub-cpu-%")
	b.ReportMetric(open/idle, "board-hub-cpu-ratio")
	b.Logf("hub and devices: %.1f%% of a core with the board open, %.1f%% without (ratio %.2f); board frames p50 %.1f ms, p99 %.1f ms, max %.1f ms",
		open*100, idle*100, open/idle, boardFrames.P50, boardFrames.P99, boardFrames.Max)
	b.ReportMetric(boardFrames.P50, "board-frame-p50-ms")
	b.ReportMetric(boardFrames.P99, "board-frame-p99-ms")
	b.ReportMetric(boardFrames.Max, "board-frame-max-ms")
	b.ReportMetric(float64(boardFrames.Long), "board-long-tasks")
	b.ReportMetric(list.P99, "list-frame-p99-ms")
	b.ReportMetric(float64(list.Long), "list-long-tasks")
	b.ReportMetric(view.P50, "view-frame-p50-ms")
	b.ReportMetric(view.P99, "view-frame-p99-ms")
	b.ReportMetric(view.Max, "view-frame-max-ms")
	b.ReportMetric(float64(view.Long), "view-long-tasks")
}

// processCPU is the CPU time this process has used, user and system.
func processCPU(t testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestBrowser_ClockAhead: readings stamped after the device view's window
// (a device clock ahead, or a ts set while the history was read) were in
// neither the history nor the live feed, so the chart never showed them.
func TestBrowser_ClockAhead(t *testing.T) {
	b := newBrowser(t)
	m := MustRunMain(t)
	c := mqttConnect(t, m.Broker.URL(), "ahead-sensor")
	now := time.Now().UnixMilli() / 1000 * 1000
	var ts []int64
	var temp []int
	var wantTS, wantTemp []float64
	for i, off := range []int64{-20_000, -18_000, -16_000, 30_000, 32_000} { // the last two 30 s ahead
		ts = append(ts, now+off)
		temp = append(temp, i)
		wantTS = append(wantTS, float64(now+off))
		wantTemp = append(wantTemp, float64(i))
	}
	publishReadings(t, c, "ahead", ts, temp)
	b.run(t,
		chromedp.Navigate(m.HTTP.URL()+"/#/device/ahead"),
		chromedp.WaitVisible(chromedp.CSS(`section.chart[data-metric="temp"] canvas`)),
	)
	b.waitPage(t, "every reading, those ahead too", func(st *pageState) error {
		if !st.Live {
			return fmt.Errorf("not live yet")
		}
		return checkChart(st, "temp", wantTS, wantTemp)
	})
	b.checkNoErrors(t)
}

// TestBrowser_ChartDetails: y-axis labels of large values were clipped
// (4154.155 showed as .54.155), values of 1000 or more lost their
// decimals, the header's "latest" was a bucket's average, one string
// reading hid a metric's numeric chart, and the empty list's hint named
// port 1883 whatever the hub listened on.
func TestBrowser_ChartDetails(t *testing.T) {
	b := newBrowser(t)
	m := MustRunMain(t)
	b.run(t, chromedp.Navigate(m.HTTP.URL()+"/"), chromedp.WaitVisible(chromedp.CSS(`div.notice pre`)))
	_, port, _ := net.SplitHostPort(m.Broker.ListenAddr())
	if hint := b.text(t, `div.notice pre`); !strings.Contains(hint, "-p "+port) {
		t.Fatalf("hint %q, want the hub's MQTT port %s", hint, port)
	}
	c := mqttConnect(t, m.Broker.URL(), "details")
	now := time.Now().UnixMilli() / 1000 * 1000
	for i, p := range []string{
		fmt.Sprintf(`{"t":4154.155,"ts":%d}`, now-4000),
		fmt.Sprintf(`{"t":4154.3,"ts":%d}`, now-2000),
		fmt.Sprintf(`{"t":4154.2,"ts":%d}`, now-1900), // the same bucket: its average, 4154.25, is not the latest
		fmt.Sprintf(`{"t":"error","ts":%d}`, now-1000),
	} {
		if tok := c.Publish("devices/gauge/telemetry", 1, false, p); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatal(i, tok.Error())
		}
	}
	b.run(t, goHash("#/device/gauge"))
	b.waitPage(t, "the chart of t, with its true latest value and room for its labels", func(st *pageState) error {
		ch, ok := st.Charts["t"]
		if !ok || !ch.Drawn {
			return fmt.Errorf("no chart of t (its latest reading is a string): %+v", st.Charts)
		}
		if ch.Latest != "4154.2" {
			return fmt.Errorf("header shows %q, want the latest numeric reading, 4154.2", ch.Latest)
		}
		longest := 0
		for _, l := range ch.YLabels {
			longest = max(longest, len(l))
		}
		if longest < 7 || ch.YAxis < float64(7*longest) {
			return fmt.Errorf("y axis %v px wide for labels %v: too narrow", ch.YAxis, ch.YLabels)
		}
		return nil
	})
	b.checkNoErrors(t)
}

// TestBrowser_Commands: from the device view a user sends a command and
// sees it answered live, and sets a shared attribute that the device gets.
func TestBrowser_Commands(t *testing.T) {
	b := newBrowser(t)
	m := MustRunMain(t)
	dev := mqttConnect(t, m.Broker.URL(), "pump-7")
	publishReadings(t, dev, "pump-7", []int64{time.Now().UnixMilli()}, []int{20})
	answerCommands(t, dev, "pump-7")
	var desired inbox
	subscribe(t, dev, "devices/pump-7/attributes/desired", desired.handler)
	b.run(t,
		chromedp.Navigate(m.HTTP.URL()+"/#/device/pump-7"),
		chromedp.WaitVisible(chromedp.CSS(`form[aria-label="send a command"] input[name="method"]`)),
	)
	// The view builds its panels again when its data arrives: the form is
	// filled once the view is live.
	b.waitPage(t, "the device view live", func(st *pageState) error {
		if !st.Live {
			return fmt.Errorf("not live yet")
		}
		return nil
	})
	b.run(t,
		chromedp.SetValue(chromedp.CSS(`input[name="method"]`), "setInterval"),
		chromedp.SetValue(chromedp.CSS(`input[name="params"]`), `{"seconds":5}`),
		chromedp.Click(chromedp.CSS(`form[aria-label="send a command"] button[type="submit"]`)),
	)
	checkFor(t, 30*time.Second, func() error {
		page, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`(() => { const v = window.telehub.view;
			return JSON.stringify({ rows: [...document.querySelectorAll('table.commands tr[data-command]')].map((tr) => tr.dataset.command + ' ' + tr.dataset.status),
				known: v.commands ? [...v.commands.values()].map((c) => c.id + ' ' + c.status + ' ' + c.updated) : null, live: !!(v.feed && v.feed.live), error: v.cmdError ? v.cmdError.textContent : null }); })()`))
		if err == nil && strings.Contains(page, ` replied"`) {
			return nil
		}
		_, hub := request(t, "GET", m.HTTP.URL()+"/api/v1/devices/pump-7/commands", "", "")
		return fmt.Errorf("the page shows no replied command (%v): %s; the hub's: %s", err, page, hub)
	})
	// Read in one step: the table is redrawn at each change.
	if got, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.querySelector('table.commands tr[data-status="replied"] td.payload').textContent`)); err != nil || got != `{"echo":{"seconds":5}}` {
		t.Fatalf("answer shown: %q (%v)", got, err)
	}
	b.run(t,
		chromedp.SetValue(chromedp.CSS(`input[name="shared"]`), `{"target":21.5}`),
		chromedp.Click(chromedp.CSS(`form[aria-label="set shared attributes"] button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`table.attributes tr[data-scope="shared"][data-key="target"]`)),
	)
	desired.waitLast(t, `devices/pump-7/attributes/desired {"target":21.5}`)
	b.screenshot(t, "device-commands")
	b.checkNoErrors(t)
}

// TestBrowser_Alerts: an alert raised by a device's reading appears in the
// alerts view without a reload, is acknowledged there, and shows as a
// badge in the device list and a marker on the device's chart.
func TestBrowser_Alerts(t *testing.T) {
	b := newBrowser(t)
	m := MustRunMain(t)
	postRule(t, m.HTTP.URL(), `{"name":"hot","device_prefix":"oven","metric":"temp","op":">","value":30,"severity":"critical"}`)
	dev := mqttConnect(t, m.Broker.URL(), "oven-a")
	now := time.Now().UnixMilli()
	publishReadings(t, dev, "oven", []int64{now - 2000}, []int{20})
	b.run(t,
		chromedp.Navigate(m.HTTP.URL()+"/#/alerts"),
		chromedp.WaitVisible(chromedp.CSS(`.notice.no-alerts`)),
	)
	publishReadings(t, dev, "oven", []int64{now - 1000}, []int{35})
	// The row, without a reload; a failure says whether the hub had raised
	// the alert (the page missed it) or not.
	checkFor(t, 30*time.Second, func() error {
		n, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](`document.querySelectorAll('table.alerts tr[data-status="active"] button[data-action="ack"]').length`))
		if err == nil && n == 1 {
			return nil
		}
		page, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`(() => { const v = window.telehub.view, f = v.feed;
			return JSON.stringify({ live: !!(f && f.live), ws: f && f.ws ? f.ws.readyState : null, attempt: f && f.attempt, listed: [...v.alerts.values()].map((a) => a.id + ' ' + a.status), conn: document.getElementById('conn').dataset.state }); })()`))
		return fmt.Errorf("no active row on the page (%v; page %s); the hub's alerts: %+v, websockets %d", err, page, listAlerts(t, m.HTTP.URL(), ""), m.HTTP.WSClients())
	})
	if got := b.text(t, `table.alerts tr[data-status="active"] td:nth-child(5)`); got != "temp is 35 (> 30)" {
		t.Fatalf("alert shown as %q", got)
	}
	b.run(t,
		chromedp.Click(chromedp.CSS(`table.alerts tr[data-status="active"] button[data-action="ack"]`)),
		chromedp.WaitVisible(chromedp.CSS(`table.alerts tr[data-status="acknowledged"]`)),
	)
	if list := listAlerts(t, m.HTTP.URL(), "status=acknowledged"); len(list) != 1 || list[0].AckedBy != "dashboard" {
		t.Fatalf("after the click, acknowledged alerts: %+v", list)
	}
	if got := b.text(t, `#alert-badge`); got != "1" {
		t.Fatalf("navigation badge %q, want 1", got)
	}
	b.screenshot(t, "alerts")
	b.run(t,
		goHash("#/"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-device="oven"] .badge[data-severity="critical"]`)),
		goHash("#/device/oven"),
		chromedp.WaitVisible(chromedp.CSS(`.device-alerts`)),
	)
	b.waitPage(t, "the alert marked on the chart", func(st *pageState) error {
		if c, ok := st.Charts["temp"]; !ok || len(c.Alerts) != 1 || !c.Drawn {
			return fmt.Errorf("temp chart %+v", st.Charts["temp"])
		}
		return nil
	})
	b.screenshot(t, "device-alert")
	b.checkNoErrors(t)
}

// boardState is what BoardView.snapshot() in app.js returns.
type boardState struct {
	ID      string
	Live    bool
	Seq     int64
	Unsaved bool
	Layout  [][4]int
	Panels  []panelState
}

type panelState struct {
	Kind  string
	Lines []struct {
		Device, Metric string
		Xs, Ys, Ns     []float64
	}
	Value    string
	Gauge    string // stat: the gauge's arc
	Latest   any
	Rows     [][]string
	Base     string // map
	Outlines int
	Markers  []struct {
		Device   string
		Lat, Lon float64
	}
	Tracks   map[string]int
	Status   string // command
	Response any
	Error    string
	Alerts   []struct { // alerts
		ID               int64
		Device, Severity string
		Status           string
	}
}

// panel is the first panel of kind.
func (st *boardState) panel(kind string) *panelState {
	for i := range st.Panels {
		if st.Panels[i].Kind == kind {
			return &st.Panels[i]
		}
	}
	return &panelState{}
}

func (b *browser) waitBoard(t *testing.T, what string, ok func(*boardState) error) *boardState {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := chromedp.Run(b.ctx, chromedp.Evaluate[*boardState](`window.telehub && window.telehub.view && window.telehub.view.snapshot && window.telehub.view.panels ? window.telehub.view.snapshot() : null`))
		if err == nil && st != nil {
			err = ok(st)
		} else if err == nil {
			err = fmt.Errorf("no board view")
		}
		if err == nil {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readingsOn checks that the time-series panel holds n readings of each of
// its two devices, each once.
func readingsOn(st *boardState, n int) error {
	ts := st.panel("timeseries")
	if len(ts.Lines) != 2 {
		return fmt.Errorf("panels %+v", st.Panels)
	}
	for _, l := range ts.Lines {
		sum := 0.0
		for _, c := range l.Ns {
			sum += c
		}
		if int(sum) != n {
			return fmt.Errorf("%s %s holds %v readings (buckets %v of %v), want %d", l.Device, l.Metric, sum, l.Ns, l.Xs, n)
		}
	}
	return nil
}

// panelForm fills the open panel dialog: fields by name (in the n-th
// series row for "series N name"), then submits it.
func (b *browser) panelForm(t *testing.T, kind string, fields ...[2]string) {
	t.Helper()
	b.run(t, chromedp.SetValue(chromedp.CSS(`select[data-action="add-kind"]`), kind), chromedp.Click(chromedp.CSS(`button[data-action="add"]`)),
		chromedp.WaitVisible(chromedp.CSS(`dialog.panel-dialog`)))
	for _, f := range fields {
		sel := `dialog.panel-dialog [name="` + f[0] + `"]`
		if row, name, ok := strings.Cut(f[0], " "); ok && strings.HasPrefix(row, "series") {
			sel = `dialog.panel-dialog fieldset[data-series]:nth-of-type(` + strings.TrimPrefix(row, "series") + `) [name="` + name + `"]`
		}
		if f[0] == "add-series" {
			b.run(t, chromedp.Click(chromedp.CSS(`dialog.panel-dialog button[data-action="add-series"]`)))
			continue
		}
		b.run(t, chromedp.SetValue(chromedp.CSS(sel), f[1]))
	}
	b.run(t, chromedp.Click(chromedp.CSS(`dialog.panel-dialog button[data-action="apply-panel"]`)), chromedp.WaitNotPresent(chromedp.CSS(`dialog.panel-dialog`)))
}

// TestBrowser_Board: a board made through the page's forms, with a
// time-series panel over two devices, a stat, a map and a text panel, laid
// out with the keyboard, survives a reload, takes live readings on every
// panel, and after the hub restarts under the page holds every reading
// exactly once. Screenshots at desktop and phone width.
func TestBrowser_Board(t *testing.T) {
	b := newBrowser(t)
	dbPath := filepath.Join(t.TempDir(), "telehub.db")
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	mqttAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	hub := func() *Main {
		return MustRunMain(t, func(c *Config) { c.DB, c.HTTPAddr, c.MQTTAddr = dbPath, httpAddr, mqttAddr })
	}
	m := hub()
	c := mqttConnect(t, m.Broker.URL(), "board-sensors")
	// Readings 20 s apart: each has a bucket of its own at any width.
	base := time.Now().UnixMilli()/1000*1000 - 40*20_000
	next := 0
	publish := func(n int) {
		t.Helper()
		var ts []int64
		var temp []int
		for i := 0; i < n; i++ {
			ts = append(ts, base+int64(next)*20_000)
			temp = append(temp, 20+next)
			next++
		}
		publishReadings(t, c, "b-1", ts, temp)
		publishReadings(t, c, "b-2", ts, temp)
	}
	// Positions: b-1 in Munich, b-2 in Lisbon, one step east per call.
	moved := 0
	move := func() {
		t.Helper()
		for i, p := range [][2]float64{{48.137, 11.575}, {38.722, -9.139}} {
			ts := time.Now().UnixMilli() - 1000 + int64(moved)
			if tok := c.Publish(fmt.Sprintf("devices/b-%d/telemetry", i+1), 1, false, fmt.Sprintf(`{"lat":%g,"lon":%g,"ts":%d}`, p[0], p[1]+float64(moved)*0.01, ts)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatal(tok.Error())
			}
		}
		moved++
	}
	publish(5)
	move()

	b.run(t,
		chromedp.Navigate(m.HTTP.URL()+"/#/boards"),
		chromedp.WaitVisible(chromedp.CSS(`ul.boards a`)), // the Fleet board, generated
		chromedp.Click(chromedp.CSS(`button[data-action="new"]`)),
		chromedp.WaitVisible(chromedp.CSS(`input.board-name`)),
		chromedp.Clear(chromedp.CSS(`input.board-name`)),
		chromedp.SendKeys(chromedp.CSS(`input.board-name`), "Greenhouse"),
	)
	b.panelForm(t, "timeseries", [2]string{"title", "temperatures"}, [2]string{"series1 mode", "device"}, [2]string{"series1 target", "b-1"}, [2]string{"series1 metric", "temp"},
		[2]string{"add-series"}, [2]string{"series2 mode", "device"}, [2]string{"series2 target", "b-2"}, [2]string{"series2 metric", "temp"}, [2]string{"series2 color", "#dc2626"},
		[2]string{"thresholds", "30 #d97706"})
	b.panelForm(t, "stat", [2]string{"title", "b-1 now"}, [2]string{"device", "b-1"}, [2]string{"metric", "temp"}, [2]string{"unit", "°C"}, [2]string{"decimals", "1"})
	b.panelForm(t, "map", [2]string{"title", "where"}, [2]string{"device_prefix", "b-"})
	// The new board's text panel, edited in its form.
	b.run(t, chromedp.Click(chromedp.CSS(`section.panel[data-kind="text"] button[data-action="edit-panel"]`)), chromedp.WaitVisible(chromedp.CSS(`dialog.panel-dialog textarea`)),
		chromedp.SetValue(chromedp.CSS(`dialog.panel-dialog textarea[name="text"]`), "**Greenhouse** sensors, see [docs](https://example.com) <script>x</script>"),
		chromedp.Click(chromedp.CSS(`dialog.panel-dialog button[data-action="apply-panel"]`)), chromedp.WaitNotPresent(chromedp.CSS(`dialog.panel-dialog`)))
	// The layout, with the keyboard: the stat moves right by 9 columns to
	// sit beside the chart (x 0 → 9, w 3) and one row up; the map grows a
	// column (Shift+ArrowRight).
	st := b.waitBoard(t, "four panels", func(st *boardState) error {
		if len(st.Layout) != 4 || !st.Live {
			return fmt.Errorf("layout %v", st.Layout)
		}
		return nil
	})
	statY := st.Layout[2][1]
	b.run(t, chromedp.Focus(chromedp.CSS(`section.panel[data-kind="stat"]`)))
	for i := 0; i < 9; i++ {
		b.run(t, chromedp.KeyEvent(kb.ArrowRight))
	}
	b.run(t, chromedp.KeyEvent(kb.ArrowUp),
		chromedp.Focus(chromedp.CSS(`section.panel[data-kind="map"]`)), chromedp.KeyEvent(kb.ArrowRight, chromedp.KeyModifiers(chromedp.ModifierShift)))
	st = b.waitBoard(t, "the layout changed", func(st *boardState) error {
		if !st.Unsaved || st.Layout[2] != [4]int{9, statY - 1, 3, 3} || st.Layout[3][2] != 7 {
			return fmt.Errorf("unsaved %v, layout %v", st.Unsaved, st.Layout)
		}
		return nil
	})
	if got := b.text(t, `div[aria-live="polite"].sr-only`); !strings.Contains(got, "7 wide") {
		t.Fatalf("the keyboard change is announced as %q", got)
	}
	// Leaving with the changes unsaved asks first; declined, the board stays.
	if _, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`window.confirm = () => false; true`)); err != nil {
		t.Fatal(err)
	}
	b.run(t, goHash("#/boards"), chromedp.Sleep(200*time.Millisecond))
	b.waitBoard(t, "the board kept", func(st *boardState) error {
		if !st.Unsaved || len(st.Layout) != 4 {
			return fmt.Errorf("unsaved %v, layout %v", st.Unsaved, st.Layout)
		}
		return nil
	})
	if h, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`location.hash`)); err != nil || !strings.HasPrefix(h, "#/board/") {
		t.Fatalf("the URL after a declined leave: %q (%v)", h, err)
	}
	b.run(t, chromedp.Click(chromedp.CSS(`button[data-action="save"]`)))
	b.waitBoard(t, "saved", func(st *boardState) error {
		if st.Unsaved {
			return fmt.Errorf("not saved yet")
		}
		return nil
	})
	b.run(t, chromedp.Click(chromedp.CSS(`button[data-action="edit"]`)), chromedp.WaitNotPresent(chromedp.CSS(`input.board-name`)), chromedp.Reload())
	b.waitBoard(t, "history on every panel after a reload", func(st *boardState) error {
		if err := readingsOn(st, 5); err != nil {
			return err
		}
		if len(st.Panels) != 4 || st.Layout[2] != [4]int{9, statY - 1, 3, 3} {
			return fmt.Errorf("layout %v", st.Layout)
		}
		if v := st.panel("stat").Value; v != "24.0 °C" {
			return fmt.Errorf("stat %q", v)
		}
		// world-atlas 2.0.2's countries-110m holds 177 countries, each a layer.
		if mp := st.panel("map"); mp.Base != "outline" || mp.Outlines != 177 || len(mp.Markers) != 2 || mp.Tracks["b-1"] != 1 {
			return fmt.Errorf("map %+v", mp)
		}
		return nil
	})
	if got := b.text(t, `h1`); got != "Greenhouse" {
		t.Fatalf("board name %q", got)
	}
	if got := b.text(t, `section.panel[data-kind="text"] .markdown`); got != "Greenhouse sensors, see docs <script>x</script>" {
		t.Fatalf("text panel shows %q", got)
	}
	publish(3)
	move()
	b.waitBoard(t, "live readings", func(st *boardState) error {
		if err := readingsOn(st, 8); err != nil {
			return err
		}
		if v := st.panel("stat").Value; v != "27.0 °C" {
			return fmt.Errorf("stat %q", v)
		}
		mp := st.panel("map")
		for _, mk := range mp.Markers {
			if mk.Device == "b-2" && (math.Abs(mk.Lat-38.722) > 1e-9 || math.Abs(mk.Lon+9.129) > 1e-9) {
				return fmt.Errorf("b-2 at %v, %v", mk.Lat, mk.Lon)
			}
		}
		if mp.Tracks["b-1"] != 2 || mp.Tracks["b-2"] != 2 {
			return fmt.Errorf("tracks %v", mp.Tracks)
		}
		return nil
	})
	b.screenshot(t, "board")

	m = b.restartHub(t, m, hub)
	c = mqttConnect(t, m.Broker.URL(), "board-sensors-2")
	publish(2)
	move()
	st = b.waitBoard(t, "readings after the restart", func(st *boardState) error {
		if err := readingsOn(st, 10); err != nil {
			return err
		}
		if tr := st.panel("map").Tracks; tr["b-1"] != 3 {
			return fmt.Errorf("tracks %v", tr)
		}
		return nil
	})
	if st.Seq != int64(m.Store.LastSeq()) {
		t.Fatalf("page at seq %d, hub at %d", st.Seq, m.Store.LastSeq())
	}
	b.run(t, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile), chromedp.Sleep(300*time.Millisecond))
	b.screenshot(t, "board-phone")
	// Dark, at desktop width: the charts and the map change colours.
	b.run(t, chromedp.EmulateViewport(1280, 900),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
				Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
			})
			return err
		}),
		chromedp.Sleep(500*time.Millisecond))
	b.screenshot(t, "board-dark")
	b.checkNoErrors(t)
}

// restartHub closes the hub under the page, starts it again with start
// (the same database and ports) and waits until the page is live again.
func (b *browser) restartHub(t *testing.T, m *Main, start func() *Main) *Main {
	t.Helper()
	b.setHubDown(true)
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.run(t, chromedp.WaitVisible(chromedp.CSS(`#conn[data-state="reconnecting"]`)))
	m = start()
	deadline := time.Now().Add(30 * time.Second)
	for {
		live, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`!!(window.telehub.view && window.telehub.view.feed && window.telehub.view.feed.ws && window.telehub.view.feed.live)`))
		if err == nil && live {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page is not live again after the restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.setHubDown(false)
	return m
}

// TestBrowser_BoardVariable: one board serves a fleet through a $device
// variable: choosing another device changes the panels that name it.
func TestBrowser_BoardVariable(t *testing.T) {
	b := newBrowser(t)
	m := MustRunMain(t)
	c := mqttConnect(t, m.Broker.URL(), "var-sensors")
	now := time.Now().UnixMilli()
	publishReadings(t, c, "v-1", []int64{now - 1000}, []int{11})
	publishReadings(t, c, "v-2", []int64{now - 1000}, []int{22})
	code, body := request(t, "POST", m.HTTP.URL()+"/api/v1/boards", "", `{"name":"One of many","variables":[{"name":"device","prefix":"v-"}],"panels":[`+
		`{"kind":"stat","title":"$device temp","device":"$device","metric":"temp"},{"kind":"timeseries","x":6,"series":[{"device":"$device","metric":"temp"}]}]}`)
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, body)
	}
	var created struct{ ID int64 }
	json.Unmarshal([]byte(body), &created)
	b.run(t, chromedp.Navigate(fmt.Sprintf("%s/#/board/%d", m.HTTP.URL(), created.ID)))
	b.waitBoard(t, "v-1 chosen first", func(st *boardState) error {
		if len(st.Panels) != 2 || st.Panels[0].Value != "11" || len(st.Panels[1].Lines) != 1 || st.Panels[1].Lines[0].Device != "v-1" {
			return fmt.Errorf("panels %+v", st.Panels)
		}
		return nil
	})
	b.run(t, chromedp.SetValue(chromedp.CSS(`select[data-variable="device"]`), "v-2"))
	if _, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`document.querySelector('select[data-variable="device"]').dispatchEvent(new Event('change'))`)); err != nil {
		t.Fatal(err)
	}
	b.waitBoard(t, "v-2 chosen", func(st *boardState) error {
		if st.Panels[0].Value != "22" || st.Panels[1].Lines[0].Device != "v-2" {
			return fmt.Errorf("panels %+v", st.Panels)
		}
		return nil
	})
	if got := b.text(t, `section.panel[data-kind="stat"] h3`); got != "v-2 temp" {
		t.Fatalf("stat title %q", got)
	}
	b.checkNoErrors(t)
}
