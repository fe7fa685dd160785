// Command fleetbench is the verifier benchmark: it runs `keylime registrar` and `keylime verifier` as
// processes of the release binary, a simulated fleet of N agents in its own process, registers the
// agents and adds them to the verifier, lets the verifier poll them for a fixed time, and reports
// attestations per second, round times, late polls, the verifier's CPU time per attestation, memory
// and database size, and the time a verifier killed with SIGKILL takes to poll every agent again.
//
//	go build -o /tmp/keylime . && go run ./internal/testbed/fleet/cmd/fleetbench -keylime /tmp/keylime -n 1000
//
// (scripts/bench.sh does both.) With -pprof DIR the verifier runs inside a copy of this program, with
// net/http/pprof, and CPU, heap, allocation, mutex and block profiles of the measurement window are
// saved in DIR (read them with `go tool pprof <fleetbench binary> DIR/cpu.pprof`).
package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	_ "net/http/pprof" // served by -exec-keylime
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/keylime-go/keylime/internal/api"
	"github.com/keylime-go/keylime/internal/cli"
	"github.com/keylime-go/keylime/internal/testbed/fleet"
	"github.com/keylime-go/keylime/internal/testbed/softagent"
)

type options struct {
	keylime    string
	n          int
	interval   time.Duration
	duration   time.Duration
	warmup     time.Duration
	imaPerPoll int
	imaInitial int
	ak, ek     string
	keyCache   string
	workers    int
	restart    bool
	json       bool
	out        string
	dir        string
	keep       bool
	logLevel   string
	verCfg     string
	pprofDir   string
}

func main() {
	var o options
	var execKeylime bool
	var pprofAddr string
	flag.StringVar(&o.keylime, "keylime", "./keylime", "the keylime release binary (CGO_ENABLED=0 go build -o keylime .)")
	flag.IntVar(&o.n, "n", 100, "number of agents")
	flag.DurationVar(&o.interval, "interval", 2*time.Second, "verifier quote_interval")
	flag.DurationVar(&o.duration, "duration", 60*time.Second, "measurement window")
	flag.DurationVar(&o.warmup, "warmup", 0, "steady polling before the window (default: one interval after every agent was polled twice)")
	flag.IntVar(&o.imaPerPoll, "ima-per-poll", 0, "IMA log entries each agent adds before every quote (a runtime policy is then applied)")
	flag.IntVar(&o.imaInitial, "ima-initial", 20, "IMA log entries each agent starts with when -ima-per-poll > 0")
	flag.StringVar(&o.ak, "ak", "ecc", "AK type: ecc (P-256 ECDSA) or rsa (RSA-2048 RSASSA, ~1 ms per quote in the fleet)")
	flag.StringVar(&o.ek, "ek", "ecc", "EK type: ecc or rsa")
	flag.StringVar(&o.keyCache, "key-cache", defaultCache(), "directory caching generated RSA keys across runs (\"\" for none)")
	flag.IntVar(&o.workers, "workers", 32, "concurrent registrations and adds")
	flag.BoolVar(&o.restart, "restart", true, "measure the time a verifier killed with SIGKILL takes to poll every agent again")
	flag.BoolVar(&o.json, "json", false, "also print the results as JSON after the table")
	flag.StringVar(&o.out, "out", "", "write the JSON results to this file")
	flag.StringVar(&o.dir, "dir", "", "work directory (default: a new temporary directory, removed unless -keep)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (logs, databases)")
	flag.StringVar(&o.logLevel, "log-level", "warn", "log level of the registrar and verifier")
	flag.StringVar(&o.verCfg, "verifier-config", "", "TOML lines added to the verifier's section, e.g. 'agent_connections = \"per-quote\"'")
	flag.StringVar(&o.pprofDir, "pprof", "", "run the verifier in a profiled copy of this program and save its profiles here")
	flag.BoolVar(&execKeylime, "exec-keylime", false, "internal: run keylime with the arguments after -- in this process, serving pprof on -pprof-addr")
	flag.StringVar(&pprofAddr, "pprof-addr", "", "internal: pprof listen address for -exec-keylime")
	flag.Parse()
	if execKeylime {
		os.Exit(runKeylime(pprofAddr, flag.Args()))
	}
	if os.Getenv("GOGC") == "" {
		// The fleet stands in for thousands of machines on the verifier's own CPUs; its memory is not
		// measured, and collecting its garbage less often leaves more CPU to the verifier (GOGC=100
		// cost the fleet a fifth of its CPU while a restarted verifier resumed 5,000 agents).
		debug.SetGCPercent(fleetGCPercent)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "fleetbench:", err)
		os.Exit(1)
	}
}

func defaultCache() string {
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "keylime-fleet")
}

// fleetGCPercent is the fleet's GOGC unless GOGC is set.
const fleetGCPercent = 400

// runKeylime runs the keylime command line in this process with profiling enabled and pprof served.
func runKeylime(addr string, args []string) int {
	runtime.SetMutexProfileFraction(10)
	runtime.SetBlockProfileRate(int(100 * time.Microsecond))
	if addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "pprof:", err)
			return 1
		}
		go func() { _ = http.Serve(ln, http.DefaultServeMux) }()
	}
	return cli.Main(append([]string{"keylime"}, args...), os.Stdout, os.Stderr)
}

func keyAlg(s string) (softagent.KeyAlg, error) {
	switch s {
	case "ecc":
		return softagent.ECC, nil
	case "rsa":
		return softagent.RSA, nil
	}
	return 0, fmt.Errorf("key type %q: want ecc or rsa", s)
}

// Result is the benchmark's outcome (the JSON document).
type Result struct {
	Agents           int     `json:"agents"`
	IntervalS        float64 `json:"quote_interval_s"`
	WindowS          float64 `json:"window_s"`
	IMAPerPoll       int     `json:"ima_entries_per_poll"`
	AK               string  `json:"ak"`
	Cores            int     `json:"cores"`
	GoVersion        string  `json:"go_version"`
	LoadAvgStart     string  `json:"load_average_start"`
	LoadAvgEnd       string  `json:"load_average_end"`
	SetupS           float64 `json:"fleet_setup_s"`
	RegisterS        float64 `json:"register_s"`
	AddS             float64 `json:"add_s"`
	Target           float64 `json:"target_attestations_per_s"`
	AttestationsPerS float64 `json:"attestations_per_s"`
	QuotesPerS       float64 `json:"quotes_served_per_s"`
	QuoteErrors      int     `json:"quote_errors"`
	NotAttesting     int     `json:"agents_not_in_get_quote"`
	Unpolled         int     `json:"agents_not_polled_in_window"`
	AgentRound       Millis  `json:"agent_round_ms"`
	VerifierRound    Millis  `json:"verifier_round_ms"`
	PollGap          Millis  `json:"poll_gap_ms"`
	Polls            int     `json:"polls"`
	LatePolls        int     `json:"late_polls"`
	LateShare        float64 `json:"late_share"`
	VerifierCPUS     float64 `json:"verifier_cpu_s"`
	VerifierCores    float64 `json:"verifier_cpu_cores"`
	CPUPerAttestUS   float64 `json:"verifier_cpu_per_attestation_us"`
	FleetCores       float64 `json:"fleet_cpu_cores"`
	VerifyUS         float64 `json:"signature_verify_us"`
	FloorPerS        float64 `json:"crypto_floor_attestations_per_s"`
	FloorRatio       float64 `json:"cpu_per_attestation_over_verify"`
	Fsync            Millis  `json:"disk_fsync_ms"`
	RSSIdle          int64   `json:"verifier_rss_idle_bytes"`
	RSS              int64   `json:"verifier_rss_bytes"`
	HWM              int64   `json:"verifier_rss_peak_bytes"`
	BytesPerAgent    int64   `json:"verifier_bytes_per_agent"`
	// The private (anonymous) part of RSS and of the bytes per agent; the rest is page cache mapped
	// in: the binary and verifier.db.
	AnonIdle          int64   `json:"verifier_rss_anon_idle_bytes"`
	Anon              int64   `json:"verifier_rss_anon_bytes"`
	AnonBytesPerAgent int64   `json:"verifier_anon_bytes_per_agent"`
	DBBytes           int64   `json:"bbolt_bytes"`
	RestartAPIS       float64 `json:"restart_api_up_s,omitempty"`
	RestartS          float64 `json:"restart_all_polled_s,omitempty"`
	RestartP50S       float64 `json:"restart_half_polled_s,omitempty"`
	RestartP90S       float64 `json:"restart_90pct_polled_s,omitempty"`
	// CPU seconds the restarted verifier and the fleet spent from the kill until every agent was polled.
	RestartVerifierCPU float64 `json:"restart_verifier_cpu_s,omitempty"`
	RestartFleetCPU    float64 `json:"restart_fleet_cpu_s,omitempty"`
	// RestartHWM is the restarted verifier's peak RSS until every agent was polled.
	RestartHWM int64  `json:"restart_verifier_rss_peak_bytes,omitempty"`
	Profiles   string `json:"profiles,omitempty"`
}

// Millis are percentiles in milliseconds.
type Millis struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func millis(p fleet.Percentiles) Millis {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return Millis{ms(p.P50), ms(p.P90), ms(p.P99), ms(p.Max)}
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func run(o options) error {
	akAlg, err := keyAlg(o.ak)
	if err != nil {
		return err
	}
	ekAlg, err := keyAlg(o.ek)
	if err != nil {
		return err
	}
	rsaAK, rsaEK := akAlg == softagent.RSA, ekAlg == softagent.RSA
	if o.n < 1 || o.interval <= 0 || o.duration <= 0 {
		return errors.New("-n, -interval and -duration must be positive")
	}
	if _, err := os.Stat(o.keylime); err != nil {
		return fmt.Errorf("keylime binary: %w (build it: CGO_ENABLED=0 go build -o keylime .)", err)
	}
	r := &Result{Agents: o.n, IntervalS: o.interval.Seconds(), IMAPerPoll: o.imaPerPoll, AK: o.ak,
		Cores: runtime.NumCPU(), GoVersion: runtime.Version(), LoadAvgStart: loadavg(), Target: float64(o.n) / o.interval.Seconds()}
	r.VerifyUS = verifyCost(akAlg)

	dir := o.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "fleetbench-"); err != nil {
			return err
		}
		if !o.keep {
			defer os.RemoveAll(dir)
		}
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ctx := context.Background()
	dcfg := fleet.DeploymentConfig{Binary: o.keylime, Dir: dir, QuoteInterval: o.interval, LogLevel: o.logLevel, ExtraVerifierConfig: o.verCfg}
	pprofAddr := ""
	if o.pprofDir != "" {
		if err := os.MkdirAll(o.pprofDir, 0o755); err != nil {
			return err
		}
		self, err := os.Executable()
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		pprofAddr = ln.Addr().String()
		ln.Close()
		dcfg.VerifierCommand = []string{self, "-exec-keylime", "-pprof-addr", pprofAddr, "--"}
		r.Profiles = o.pprofDir
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	d, err := fleet.Deploy(sctx, dcfg)
	cancel()
	if err != nil {
		return err
	}
	defer d.Close()
	logf("registrar and verifier up in %s (load average %s)", dir, r.LoadAvgStart)

	t0 := time.Now()
	var imaCfg *softagent.IMAConfig
	if o.imaPerPoll > 0 {
		imaCfg = &softagent.IMAConfig{Initial: o.imaInitial, PerQuote: o.imaPerPoll}
	}
	f, err := fleet.New(fleet.Config{N: o.n, ClientCAs: d.ClientTLS.Pool, RSAAK: rsaAK, RSAEK: rsaEK, KeyCache: o.keyCache, IMA: imaCfg})
	if err != nil {
		return err
	}
	defer f.Close()
	r.SetupS = time.Since(t0).Seconds()
	logf("%d agents listening (%.1f s)", o.n, r.SetupS)
	// The idle verifier's memory, before any agent is added.
	if idle, err := d.Verifier.Usage(); err == nil {
		r.RSSIdle, r.AnonIdle = idle.RSS, idle.Anon
	}

	t0 = time.Now()
	rctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	if err := f.Register(rctx, d.Reg, o.workers); err != nil {
		return err
	}
	r.RegisterS = time.Since(t0).Seconds()
	logf("registered and activated %d agents (%.1f s, %.0f/s)", o.n, r.RegisterS, float64(o.n)/r.RegisterS)
	add := fleet.AddOptions{}
	if imaCfg != nil {
		pol, err := fleet.RuntimePolicy(imaCfg)
		if err != nil {
			return err
		}
		if err := d.Ver.PutRuntimePolicy(rctx, "fleet", &api.RuntimePolicyRequest{RuntimePolicy: base64.StdEncoding.EncodeToString(pol)}, false); err != nil {
			return err
		}
		add.RuntimePolicyName = "fleet"
	}
	t0 = time.Now()
	if err := f.AddToVerifier(rctx, d.Admin, d.Ver, add, o.workers); err != nil {
		return err
	}
	r.AddS = time.Since(t0).Seconds()
	logf("added %d agents to the verifier (%.1f s)", o.n, r.AddS)
	if err := f.WaitRequests(rctx, 2); err != nil {
		return err
	}
	warm := o.warmup
	if warm == 0 {
		warm = o.interval
	}
	time.Sleep(warm)

	// Measurement window: attestation counts from the verifier's bulk status (read outside the CPU
	// window), quote timings at the agents, CPU time from /proc.
	before, err := attestations(ctx, d)
	if err != nil {
		return err
	}
	tb := time.Now()
	f.ResetStats()
	u0, err := d.Verifier.Usage()
	if err != nil {
		return err
	}
	self0, _ := fleet.ReadUsage(0)
	var profDone chan error
	if pprofAddr != "" {
		// Block, mutex and allocation profiles are cumulative: these are the base to subtract
		// (go tool pprof -diff_base block-start.pprof block.pprof).
		for _, p := range []string{"block", "mutex", "allocs"} {
			if err := fetch(pprofAddr, "/debug/pprof/"+p, filepath.Join(o.pprofDir, p+"-start.pprof")); err != nil {
				logf("%s profile: %v", p, err)
			}
		}
		profDone = make(chan error, 1)
		go func() {
			profDone <- fetch(pprofAddr, "/debug/pprof/profile?seconds="+fmt.Sprint(int(o.duration.Seconds())), filepath.Join(o.pprofDir, "cpu.pprof"))
		}()
	}
	logf("measuring for %v", o.duration)
	probeCtx, stopProbe := context.WithCancel(ctx)
	fsyncs := make(chan []time.Duration, 1)
	go func() { fsyncs <- probeFsync(probeCtx, filepath.Join(dir, "fsync-probe")) }()
	time.Sleep(o.duration)
	stopProbe()
	r.Fsync = millis(fleet.Summarize(<-fsyncs))
	u1, err := d.Verifier.Usage()
	if err != nil {
		return err
	}
	self1, _ := fleet.ReadUsage(0)
	st := f.Stats(o.interval)
	after, err := attestations(ctx, d)
	if err != nil {
		return err
	}
	ta := time.Now()
	r.LoadAvgEnd = loadavg()
	if profDone != nil {
		if err := <-profDone; err != nil {
			logf("cpu profile: %v", err)
		}
		for _, p := range []string{"heap", "allocs", "mutex", "block", "goroutine"} {
			if err := fetch(pprofAddr, "/debug/pprof/"+p, filepath.Join(o.pprofDir, p+".pprof")); err != nil {
				logf("%s profile: %v", p, err)
			}
		}
	}

	window := st.Window.Seconds()
	r.WindowS = window
	r.AttestationsPerS = float64(after.count-before.count) / ta.Sub(tb).Seconds()
	r.NotAttesting = after.notAttesting
	r.QuotesPerS = st.Rate
	r.QuoteErrors = st.Errors
	r.Unpolled = st.Unpolled
	r.AgentRound, r.VerifierRound, r.PollGap = millis(st.AgentRound), millis(st.VerifierRound), millis(st.Gap)
	r.Polls, r.LatePolls, r.LateShare = st.Gaps, st.Late, st.LateShare
	cpu := (u1.CPU - u0.CPU).Seconds()
	r.VerifierCPUS = cpu
	r.VerifierCores = cpu / window
	if st.Requests > 0 {
		r.CPUPerAttestUS = cpu / float64(st.Requests) * 1e6
	}
	r.FleetCores = (self1.CPU - self0.CPU).Seconds() / window
	if r.VerifyUS > 0 {
		r.FloorPerS = float64(r.Cores) * 1e6 / r.VerifyUS
		r.FloorRatio = r.CPUPerAttestUS / r.VerifyUS
	}
	r.RSS, r.HWM = u1.RSS, u1.HWM
	r.BytesPerAgent = (u1.RSS - r.RSSIdle) / int64(o.n)
	r.Anon = u1.Anon
	r.AnonBytesPerAgent = (u1.Anon - r.AnonIdle) / int64(o.n)
	if fi, err := os.Stat(d.DBPath); err == nil {
		r.DBBytes = fi.Size()
	}

	if o.restart {
		logf("kill -9 the verifier and start it again")
		d.Verifier.Kill()
		fleet0, _ := fleet.ReadUsage(0)
		epoch := f.MarkEpoch()
		actx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		var restartProf chan error
		if pprofAddr != "" {
			// Profile the restarted verifier for its first 5 s: loading verifier.db and resuming.
			restartProf = make(chan error, 1)
			go func() {
				restartProf <- retryFetch(actx, pprofAddr, "/debug/pprof/profile?seconds=5", filepath.Join(o.pprofDir, "restart-cpu.pprof"))
			}()
			// And the fleet (this process) over the same 5 s: the agents' side of the resumption.
			if pf, err := os.Create(filepath.Join(o.pprofDir, "fleet-restart-cpu.pprof")); err == nil {
				if err := pprof.StartCPUProfile(pf); err == nil {
					time.AfterFunc(5*time.Second, func() {
						pprof.StopCPUProfile()
						pf.Close()
					})
				} else {
					pf.Close()
				}
			}
		}
		if err := d.StartVerifier(actx); err != nil {
			return err
		}
		r.RestartAPIS = time.Since(epoch).Seconds()
		back, err := f.WaitAllPolled(actx)
		if err != nil {
			return err
		}
		r.RestartS = back.Seconds()
		if u, err := d.Verifier.Usage(); err == nil {
			r.RestartVerifierCPU, r.RestartHWM = u.CPU.Seconds(), u.HWM
		}
		if fleet1, err := fleet.ReadUsage(0); err == nil {
			r.RestartFleetCPU = (fleet1.CPU - fleet0.CPU).Seconds()
		}
		r.RestartP50S = f.PolledAfterEpoch(0.5).Seconds()
		r.RestartP90S = f.PolledAfterEpoch(0.9).Seconds()
		if restartProf != nil {
			if err := <-restartProf; err != nil {
				logf("restart profile: %v", err)
			}
		}
	}

	printTable(os.Stdout, r)
	doc, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if o.json {
		fmt.Printf("%s\n", doc)
	}
	if o.out != "" {
		if err := os.WriteFile(o.out, append(doc, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

type counts struct {
	count        int
	notAttesting int
}

// attestations sums attestation_count over every agent from the verifier's bulk status.
func attestations(ctx context.Context, d *fleet.Deployment) (counts, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	all, err := d.Ver.Bulk(ctx)
	if err != nil {
		return counts{}, fmt.Errorf("bulk status: %w", err)
	}
	var c counts
	for _, a := range all {
		c.count += a.AttestationCount
		if a.OperationalState != api.StateGetQuote {
			c.notAttesting++
		}
	}
	return c, nil
}

// fetch saves a pprof endpoint's answer to a file.
func fetch(addr, path, file string) error {
	res, err := http.Get("http://" + addr + path)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, res.Status)
	}
	out, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, res.Body); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// probeFsync writes 4 KiB and fdatasyncs a file in the verifier's directory every 100 ms until ctx
// ends, and returns how long each sync took: the disk latency a bbolt commit waits for.
func probeFsync(ctx context.Context, path string) []time.Duration {
	f, err := os.Create(path)
	if err != nil {
		return nil
	}
	defer os.Remove(path)
	defer f.Close()
	buf := make([]byte, 4096)
	var out []time.Duration
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return out
		case <-time.After(100 * time.Millisecond):
		}
		t := time.Now()
		if _, err := f.WriteAt(buf, int64(i%64)*4096); err != nil {
			return out
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return out
		}
		out = append(out, time.Since(t))
	}
}

// retryFetch is fetch, retried until the server answers (a process that is starting) or ctx ends.
func retryFetch(ctx context.Context, addr, path, file string) error {
	for {
		err := fetch(addr, path, file)
		if err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// verifyCost measures one AK signature verification on one core, in microseconds: the crypto floor
// of an attestation.
func verifyCost(alg softagent.KeyAlg) float64 {
	digest := sha256.Sum256([]byte("fleetbench"))
	var verify func() bool
	if alg == softagent.RSA {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return 0
		}
		sig, _ := rsa.SignPKCS1v15(nil, k, crypto.SHA256, digest[:])
		verify = func() bool { return rsa.VerifyPKCS1v15(&k.PublicKey, crypto.SHA256, digest[:], sig) == nil }
	} else {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return 0
		}
		sig, _ := ecdsa.SignASN1(rand.Reader, k, digest[:])
		verify = func() bool { return ecdsa.VerifyASN1(&k.PublicKey, digest[:], sig) }
	}
	// The best of ten short runs: the least disturbed by other processes on the machine.
	best := 0.0
	for range 10 {
		n := 0
		start := time.Now()
		for time.Since(start) < 50*time.Millisecond {
			if !verify() {
				return 0
			}
			n++
		}
		us := float64(time.Since(start).Microseconds()) / float64(n)
		if best == 0 || us < best {
			best = us
		}
	}
	return best
}

func printTable(w io.Writer, r *Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	mb := func(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	pct := func(m Millis) string {
		return fmt.Sprintf("p50 %.1f  p90 %.1f  p99 %.1f  max %.1f ms", m.P50, m.P90, m.P99, m.Max)
	}
	rows := [][2]string{
		{"agents", fmt.Sprintf("%d (AK %s, %d IMA entries per poll)", r.Agents, r.AK, r.IMAPerPoll)},
		{"quote_interval / window", fmt.Sprintf("%gs / %.0fs", r.IntervalS, r.WindowS)},
		{"load average start / end", r.LoadAvgStart + " / " + r.LoadAvgEnd},
		{"setup: fleet / register / add", fmt.Sprintf("%.1fs / %.1fs / %.1fs", r.SetupS, r.RegisterS, r.AddS)},
		{"attestations/s (verifier)", fmt.Sprintf("%.1f (target %.1f)", r.AttestationsPerS, r.Target)},
		{"quotes served/s (fleet)", fmt.Sprintf("%.1f, %d errors; agents not in Get Quote %d, not polled in the window %d", r.QuotesPerS, r.QuoteErrors, r.NotAttesting, r.Unpolled)},
		{"round at the agent", pct(r.AgentRound)},
		{"verifier round (gap-interval)", pct(r.VerifierRound)},
		{"late polls (gap > 1.1 interval)", fmt.Sprintf("%d of %d (%.2f%%)", r.LatePolls, r.Polls, 100*r.LateShare)},
		{"verifier CPU", fmt.Sprintf("%.1fs = %.2f cores, %.0f µs per attestation", r.VerifierCPUS, r.VerifierCores, r.CPUPerAttestUS)},
		{"crypto floor", fmt.Sprintf("verify %.0f µs => %.0f/s on %d cores; CPU/attestation = %.1f× verify", r.VerifyUS, r.FloorPerS, r.Cores, r.FloorRatio)},
		{"fleet CPU", fmt.Sprintf("%.2f cores", r.FleetCores)},
		{"disk fdatasync (4 KiB, every 100 ms)", pct(r.Fsync)},
		{"verifier RSS idle / now / peak", mb(r.RSSIdle) + " / " + mb(r.RSS) + " / " + mb(r.HWM)},
		{"verifier bytes per agent", fmt.Sprintf("%d (anonymous %d; idle anonymous RSS %s, now %s)", r.BytesPerAgent, r.AnonBytesPerAgent, mb(r.AnonIdle), mb(r.Anon))},
		{"verifier.db", mb(r.DBBytes)},
	}
	if r.RestartS > 0 {
		rows = append(rows, [2]string{"restart after kill -9", fmt.Sprintf("API up %.2fs, agents polled: half %.2fs, 90%% %.2fs, all %.2fs", r.RestartAPIS, r.RestartP50S, r.RestartP90S, r.RestartS)},
			[2]string{"CPU until all polled", fmt.Sprintf("verifier %.2fs, fleet %.2fs; verifier peak RSS %s", r.RestartVerifierCPU, r.RestartFleetCPU, mb(r.RestartHWM))})
	}
	if r.Profiles != "" {
		rows = append(rows, [2]string{"profiles", r.Profiles})
	}
	for _, row := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
	}
	tw.Flush()
}
