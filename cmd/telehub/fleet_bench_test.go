package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkFleet measures the hub as its users run it: telesim in a process
// of its own, one paho connection per device, against a telehub binary, and
// in the same run against minhub (testdata/minhub), the least a durable hub
// must do, so that the ratios printed compare the two on the same noisy
// machine. It reports, per hub, acknowledged messages per second and the
// hub's CPU time per message (from /proc), and for telehub the
// publish-to-browser latency at a fixed rate.
//
//	go test -run '^$' -bench Fleet -benchtime 1x ./cmd/telehub
//
// TELEHUB_BENCH_DEVICES (default 1,000), TELEHUB_BENCH_SECONDS (default 15)
// and TELEHUB_BENCH_RATE (messages per second per device at the fixed
// rate, default 10) change the load.
func BenchmarkFleet(b *testing.B) {
	dir := b.TempDir()
	for _, bin := range []struct{ name, pkg string }{{"telehub", "."}, {"telesim", "../telesim"}, {"minhub", "./testdata/minhub"}} {
		if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, bin.name), bin.pkg).CombinedOutput(); err != nil {
			b.Fatalf("build %s: %v\n%s", bin.name, err, out)
		}
	}
	devices := benchDevices()
	seconds := envInt("TELEHUB_BENCH_SECONDS", 15)
	rate := envInt("TELEHUB_BENCH_RATE", 10)

	for i := 0; i < b.N; i++ {
		// Saturation: every device waits for each PUBACK, as fast as it comes.
		minRes := runFleet(b, dir, "minhub", devices, 1000, 1, seconds, false)
		hubRes := runFleet(b, dir, "telehub", devices, 1000, 1, seconds, false)
		b.ReportMetric(hubRes.rate, "msg/s")
		b.ReportMetric(hubRes.cpuPerMsg, "cpu-µs/msg")
		b.ReportMetric(minRes.rate, "min-msg/s")
		b.ReportMetric(minRes.cpuPerMsg, "min-cpu-µs/msg")
		b.ReportMetric(hubRes.rate/minRes.rate, "rate-ratio")
		b.ReportMetric(hubRes.cpuPerMsg/minRes.cpuPerMsg, "cpu-ratio")
		b.Logf("saturated, %d devices, 1 in flight each: telehub %.0f msg/s at %.1f µs CPU/msg; minhub %.0f msg/s at %.1f µs CPU/msg; ratios %.2f and %.2f",
			devices, hubRes.rate, hubRes.cpuPerMsg, minRes.rate, minRes.cpuPerMsg, hubRes.rate/minRes.rate, hubRes.cpuPerMsg/minRes.cpuPerMsg)

		// A fixed rate, with the live feed verified: latency to the browser.
		lat := runFleet(b, dir, "telehub", devices, rate, 10, seconds, true)
		b.ReportMetric(lat.rate, "fixed-msg/s")
		b.ReportMetric(lat.e2eP50, "e2e-p50-ms")
		b.ReportMetric(lat.e2eP99, "e2e-p99-ms")
		b.ReportMetric(lat.cores, "hub-cores")
		b.Logf("fixed rate %d msg/s per device: %.0f msg/s, e2e p50 %.1f ms p99 %.1f ms, hub %.2f cores, %.1f µs CPU/msg, lost %d",
			rate, lat.rate, lat.e2eP50, lat.e2eP99, lat.cores, lat.cpuPerMsg, lat.lost)
	}
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

type fleetResult struct {
	rate, cpuPerMsg, cores float64
	e2eP50, e2eP99         float64
	lost                   int64
}

// runFleet starts hub (telehub or minhub) on loopback, runs telesim against
// it for seconds and returns what it measured.
//
// extra, when given, adds flags: extra[0] to the hub's, extra[1] to telesim's.
func runFleet(b *testing.B, dir, hub string, devices, rate, inflight, seconds int, verify bool, extra ...[]string) fleetResult {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds)*time.Second+5*time.Minute)
	defer cancel()
	mqttAddr := fmt.Sprintf("127.0.0.1:%d", freePort(b))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(b))
	db := filepath.Join(b.TempDir(), hub+".db")
	var cmd *exec.Cmd
	if hub == "minhub" {
		cmd = exec.CommandContext(ctx, filepath.Join(dir, hub), "-mqtt", mqttAddr, "-db", db)
	} else {
		cmd = exec.CommandContext(ctx, filepath.Join(dir, hub), "--mqtt", mqttAddr, "--http", httpAddr, "--db", db,
			"--log-level", "error", "--max-connections", strconv.Itoa(devices+100))
		if len(extra) > 0 {
			cmd.Args = append(cmd.Args, extra[0]...)
		}
	}
	var hubOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &hubOut, &hubOut
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}()
	checkFor(b, 30*time.Second, func() error {
		if hub == "minhub" {
			if !strings.Contains(hubOut.String(), "ready") {
				return fmt.Errorf("minhub not ready: %s", hubOut.String())
			}
			return nil
		}
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
	args := []string{"--broker", "tcp://" + mqttAddr, "--devices", strconv.Itoa(devices), "--rate", strconv.Itoa(rate),
		"--inflight", strconv.Itoa(inflight), "--duration", fmt.Sprintf("%ds", seconds), "--ramp", "500", "--qos", "1", "--json"}
	if verify {
		args = append(args, "--verify", "--hub", "http://"+httpAddr)
	}
	if len(extra) > 1 {
		args = append(args, extra[1]...)
	}
	sim := exec.CommandContext(ctx, filepath.Join(dir, "telesim"), args...)
	var simErr bytes.Buffer
	sim.Stderr = &simErr
	// CPU of the hub while the devices publish: from when they all are
	// connected (the first status line that says so) to the end.
	stdout, err := sim.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cpu0 := procCPU(b, cmd.Process.Pid)
	t0 := time.Now()
	if err := sim.Start(); err != nil {
		b.Fatal(err)
	}
	var report struct {
		Acked      int64
		Seconds    float64
		Lost       int64
		E2ELatency struct{ P50, P99 float64 } `json:"e2e_latency_ms"`
	}
	var out bytes.Buffer
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		out.Write(sc.Bytes())
		out.WriteByte('\n')
	}
	if err := sim.Wait(); err != nil && !verify {
		b.Fatalf("telesim against %s: %v\n%s\n%s", hub, err, simErr.String(), hubOut.String())
	}
	cpu := procCPU(b, cmd.Process.Pid) - cpu0
	wall := time.Since(t0)
	if err := json.Unmarshal(out.Bytes(), &report); err != nil || report.Acked == 0 {
		b.Fatalf("telesim report %q: %v\n%s", out.String(), err, simErr.String())
	}
	return fleetResult{
		rate:      float64(report.Acked) / report.Seconds,
		cpuPerMsg: cpu.Seconds() * 1e6 / float64(report.Acked),
		cores:     cpu.Seconds() / wall.Seconds(),
		e2eP50:    report.E2ELatency.P50,
		e2eP99:    report.E2ELatency.P99,
		lost:      report.Lost,
	}
}

// procCPU returns the user and system CPU time the process has used.
func procCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}
