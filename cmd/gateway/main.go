// Command gateway runs credgate, an MCP gateway that federates many upstream
// MCP servers behind one endpoint and reports credential failures as typed
// objects.
//
//	gateway [serve] [FILE] [--listen ADDR]   serve /mcp over HTTP (default)
//	gateway stdio [FILE]                      serve one agent over stdio
//	gateway validate [FILE]                   check a config, list every problem
//	gateway check [FILE] [--json]             pre-flight every credential; exit 1 if any is bad
//	gateway status [FILE] [--url URL] [--watch]  a running gateway's upstreams and credentials
//	gateway import FILE                       print a desktop client's config as credgate YAML
//	gateway classify [--provider P] < response  classify an HTTP response or text
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/gateway"
	"github.com/credgate/credgate/gateway/state"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

const usage = `credgate: one MCP endpoint over many upstream MCP servers.

Usage:
  gateway [serve] [FILE] [--listen ADDR]  serve /mcp, /health, /healthz, /readyz, /status,
                                          /events over HTTP
  gateway stdio [FILE]                    serve one agent over stdio (logs go to stderr)
  gateway validate [FILE]                 check a config; exit 1 listing every problem
  gateway check [FILE] [--json]           resolve and probe every credential once; print
                                          status, TTL, source and access readiness; exit 1
                                          when any is missing, invalid, revoked, expired or
                                          expiring
  gateway status [FILE] [--url URL] [--watch]
                                          print a running gateway's upstreams and
                                          credentials with TTLs (from its /health; the
                                          address is --url, else FILE's listen); exit 1
                                          unless it is ok; --watch refreshes every 2 s
  gateway import FILE                     print a desktop client's MCP config (mcpServers)
                                          as credgate YAML
  gateway classify [FILE] [--provider P]  read an HTTP response (status line, headers,
                                          blank line, body) or plain text on stdin and
                                          print the failure object
  gateway --version | --help

Commands, the config FILE and flags may come in any order. FILE may also be
given as --config FILE or in CREDGATE_CONFIG; it is a credgate YAML config or a
desktop client's JSON (Claude Desktop, Cursor, VS Code: mcpServers). Any setting
can be overridden by CREDGATE_<KEY> with "__" for nesting (CREDGATE_LISTEN,
CREDGATE_UPSTREAMS__GITHUB__URL), and config values may use ${NAME} to read
environment variables.

Flags:
`

// commands are the subcommands; the first argument naming one is the command.
var commands = []string{"serve", "stdio", "validate", "check", "status", "import", "classify", "version", "help"}

// main leaves the collector at Go's defaults (GOGC=100, no memory limit;
// GOGC and GOMEMLIMIT still apply). Until issue 12 it set GOGC=400, when the
// SDK allocated ~340 KiB per call and the collector took a third of the CPU.
// With the SDK patched (third_party/go-sdk/PATCH.md) a forwarded call
// allocates ~25 KiB, and the trade turned: measured over 5,000 calls with 10
// upstreams x 100 tools, GOGC=100 ran a GC every ~250 calls for about 1% of
// the gateway's CPU (0.25% at 400, within the run-to-run noise of CPU per
// call), while GOGC=400's headroom of four times the live heap cost 20 MiB of
// RSS there (64 vs 43 MiB) and multiplied the cost of every idle agent
// session (10,000 held ~12 KiB live each; at 400 the heap grew to five times
// that). A memory limit under GOGC=400 was tried too: a limit low enough to
// keep 10 upstreams under 40 MiB sits at the live heap plus runtime overhead,
// and the collector then ran 600 times per 1,000 calls; a limit that scales
// with the live heap comes back to GOGC=100.
//
// main leaves Go's scheduler its default processors (GOMAXPROCS applies).
// Issue 12 tried half of them (1 on 2 vCPUs): in make bench that cut CPU
// per call from 0.162 to 0.134 ms and lifted throughput from 0.67x to 0.80x
// direct, as a second idle processor makes every socket wake-up set a thread
// spinning for work. It was reverted: with one processor under CPU
// contention, the goroutine that reads an upstream's 401 waits behind calls
// that go on sending the dead credential, and in e2e's revoked-primary route
// test (eight agents, its bound at most 2 such requests) 2 of 15 runs sent
// 4 and 6; with two processors the worst of 15 was 2. The listening line
// says how many processors the gateway has (procs).
func main() {
	// zerolog's global, set once here rather than per logger: run is also
	// called by tests, in parallel.
	zerolog.TimeFieldFormat = time.RFC3339Nano
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFlag := fs.String("config", "", "config file (YAML, or a desktop client's JSON); default $CREDGATE_CONFIG")
	listen := fs.String("listen", "", "listen address, overrides the config's listen (127.0.0.1:0 picks a free port)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	logFormat := fs.String("log-format", "json", "log format: json, or console for people")
	provider := fs.String("provider", "", "classify: provider hint (github, stripe, ...)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	jsonOut := fs.Bool("json", false, "check: print JSON instead of a table")
	statusURLFlag := fs.String("url", "", "status: the gateway's base URL (default: the config's listen, else http://127.0.0.1:8080)")
	watch := fs.Bool("watch", false, "status: refresh every 2s until interrupted")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	cmd, positional, err := parseArgs(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if !errors.Is(err, errFlagParse) {
			fmt.Fprintln(stderr, "gateway:", err)
		}
		return 2
	}
	if *showVersion || cmd == "version" {
		fmt.Fprintln(stdout, "credgate", buildVersion())
		return 0
	}
	if cmd == "help" {
		fs.Usage()
		return 0
	}
	configPath, err := configArg(cmd, *configFlag, positional)
	if err != nil {
		fmt.Fprintln(stderr, "gateway:", err)
		return 2
	}
	if *jsonOut && cmd != "check" {
		fmt.Fprintln(stderr, "gateway: --json applies to check only")
		return 2
	}
	if (*statusURLFlag != "" || *watch) && cmd != "status" {
		fmt.Fprintln(stderr, "gateway: --url and --watch apply to status only")
		return 2
	}
	if *provider != "" && cmd != "classify" {
		fmt.Fprintln(stderr, "gateway: --provider applies to classify only")
		return 2
	}
	if *listen != "" {
		if err := gateway.CheckListen(*listen); err != nil {
			fmt.Fprintf(stderr, "gateway: --listen %q: %v\n", *listen, err)
			return 2
		}
	}
	logOut := stderr
	if (cmd == "serve" || cmd == "stdio") && *logFormat == "json" {
		// A gateway logs a line per call: batched (logsink.go).
		sink := newLogSink(stderr)
		defer sink.Close()
		logOut = sink
	}
	log, err := newLogger(logOut, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "gateway:", err)
		return 2
	}
	// go-redis writes its own notices (pool, subscription) to stderr as
	// plain text; they go into the JSON log at debug instead.
	state.QuietLibraryLogs(func(msg string) { log.Debug().Str("component", "redis").Msg(msg) })

	switch cmd {
	case "validate":
		cfg, err := loadConfig(configPath)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		for _, w := range cfg.Warnings() {
			fmt.Fprintln(stderr, "warning:", w)
		}
		if *listen != "" {
			cfg.Listen = *listen
		}
		// The check serve refuses to start on: a config validate calls ok
		// must not crash-loop a pod (issue 11).
		if err := cfg.CheckExposure(cfg.Listen); err != nil {
			fmt.Fprintf(stderr, "%s: invalid config:\n  - %v (gateway serve refuses to start)\n", configPath, err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: ok\n", configPath)
		return 0
	case "check":
		return check(configPath, *jsonOut, stdout, stderr)
	case "status":
		return statusCmd(configPath, *statusURLFlag, *watch, stdout, stderr)
	case "import":
		return importConfig(configPath, stdout, stderr)
	case "classify":
		return classify(configPath, *provider, stdin, stdout, stderr)
	default: // serve, stdio
		cfg, err := loadConfig(configPath)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		if *listen != "" {
			cfg.Listen = *listen
		}
		if cmd != "stdio" {
			// Agents must authenticate where others can reach (issue 9);
			// Serve checks the bound address again.
			if err := cfg.CheckExposure(cfg.Listen); err != nil {
				log.Error().Str("err", err.Error()).Msg("gateway not started")
				return 1
			}
		}
		// The first SIGTERM or SIGINT starts a graceful shutdown (bounded by
		// shutdown_timeout); once it has begun, the signals get their default
		// action back, so a second one ends the process at once.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		// A reload loads the file as start-up did, flags included.
		reloadConfig := func() (*gateway.Config, error) {
			cfg, err := loadConfig(configPath)
			if err == nil && *listen != "" {
				cfg.Listen = *listen
			}
			return cfg, err
		}
		listening := func(addr net.Addr) {
			log.Info().Str("addr", addr.String()).Int("upstream_count", len(cfg.Upstreams)).Int("procs", runtime.GOMAXPROCS(0)).
				Msgf("listening on %s://%s/mcp", cfg.Scheme(), addr)
		}
		g, err := gateway.New(cfg, &gateway.Options{Version: buildVersion(), Logger: &log, ConfigFile: configPath, LoadConfig: reloadConfig, Listening: listening})
		if err != nil {
			log.Error().Str("err", err.Error()).Msg("gateway not started")
			return 1
		}
		defer g.Close()
		if !preflight(ctx, g, cfg, &log) {
			return 1
		}
		// SIGHUP reloads the config, then re-reads every credential from its
		// source; a change to the file reloads the config (issue 8). A
		// rejected config is logged by the gateway and shown in /health.
		stopHUP := onHangup(ctx, &log, func() {
			_ = g.ReloadConfig(authmap.TriggerSignal)
			rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := g.ReloadCredentials(rctx, authmap.TriggerSignal); err != nil {
				log.Warn().Str("err", err.Error()).Msg("SIGHUP: some credentials could not be re-read")
			}
		})
		defer stopHUP()
		stopWatch := watchConfig(ctx, configPath, &log, func() { _ = g.ReloadConfig(authmap.TriggerFile) })
		defer stopWatch()
		context.AfterFunc(ctx, stop)
		// A signal is the one way ctx ends before serving does.
		signalled := make(chan struct{})
		quiet := context.AfterFunc(ctx, func() {
			log.Info().Msg("shutting down: signal received")
			close(signalled)
		})
		defer quiet()
		if cmd == "stdio" {
			err = serveStdio(ctx, g, &log)
		} else {
			err = serveHTTP(ctx, g, cfg)
		}
		var notStarted *gateway.NotStartedError
		switch {
		case errors.As(err, &notStarted):
			log.Error().Str("err", err.Error()).Msg("gateway not started") // "err", as the gateway names the field
			return 1
		case err != nil:
			log.Error().Str("err", err.Error()).Msg("gateway stopped")
			return 1
		}
		if !quiet() {
			<-signalled // its line first
		}
		log.Info().Msg("gateway stopped")
		return 0
	}
}

// errFlagParse marks a flag error the flag package has already printed.
var errFlagParse = errors.New("bad flags")

// parseArgs reads flags, the command and positional arguments in any order:
// `gateway --config X validate` and `gateway validate X --log-level debug`
// are the same. The first argument naming a command is the command (serve
// when there is none); the others are positional. A first argument that
// names neither a command nor a file is an unknown command.
func parseArgs(fs *flag.FlagSet, args []string) (cmd string, positional []string, err error) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return "", nil, err
			}
			return "", nil, errFlagParse
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		a := args[0]
		args = args[1:]
		if cmd == "" && slices.Contains(commands, a) {
			cmd = a
			continue
		}
		positional = append(positional, a)
	}
	if cmd == "" {
		cmd = "serve"
		if len(positional) > 0 && !looksLikeFile(positional[0]) {
			return "", nil, fmt.Errorf("unknown command %q (want one of %s, or a config file)", positional[0], strings.Join(commands, ", "))
		}
	}
	return cmd, positional, nil
}

// looksLikeFile tells a config path from a mistyped command.
func looksLikeFile(s string) bool {
	if strings.ContainsAny(s, "./") {
		return true
	}
	_, err := os.Stat(s)
	return err == nil
}

// configArg picks the config path of cmd from --config, a positional
// argument and CREDGATE_CONFIG, in that order; giving two different paths is
// an error.
func configArg(cmd, flagPath string, positional []string) (string, error) {
	switch {
	case len(positional) > 1:
		return "", fmt.Errorf("%s: unexpected arguments %q (want at most one config file)", cmd, positional[1:])
	case len(positional) == 1 && flagPath != "" && flagPath != positional[0]:
		return "", fmt.Errorf("%s: two config files given (--config %s and %s)", cmd, flagPath, positional[0])
	case len(positional) == 1:
		return positional[0], nil
	case flagPath != "":
		return flagPath, nil
	}
	return os.Getenv(gateway.EnvPrefix + "CONFIG"), nil
}

// onHangup catches SIGHUP, which would otherwise stop the process: a
// gateway must not die because a terminal closed or an operator sent the
// conventional reload signal. A hangup is logged, and reload (if non-nil)
// reloads the config and re-reads the credentials. The returned function
// stops catching; the watcher also stops when ctx ends.
func onHangup(ctx context.Context, log *zerolog.Logger, reload func()) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		defer func() {
			if r := recover(); r != nil {
				log.Error().Interface("panic", r).Msg("SIGHUP handler panicked")
			}
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case <-done:
				return
			case <-hup:
				log.Info().Msg("SIGHUP: reloading the config and re-reading every credential")
				if reload != nil {
					reload()
				}
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			signal.Stop(hup)
			close(done)
		})
	}
}

func loadConfig(path string) (*gateway.Config, error) {
	if path == "" {
		return nil, errors.New("gateway: no config: pass a config FILE (or --config FILE) or set CREDGATE_CONFIG")
	}
	cfg, err := gateway.LoadConfig(path, os.Environ())
	if err != nil {
		return nil, fmt.Errorf("%s: invalid config:\n%w", path, indent(err))
	}
	return cfg, nil
}

// importConfig prints a desktop client's config as credgate YAML.
func importConfig(path string, stdout, stderr io.Writer) int {
	if path == "" {
		fmt.Fprintln(stderr, "gateway import: no file: pass the desktop client's config, such as claude_desktop_config.json")
		return 2
	}
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(stderr, "gateway import:", err)
		return 1
	}
	out, warnings, err := gateway.ImportDesktopConfig(data)
	for _, w := range warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: cannot import:\n%v\n", path, indent(err))
		return 1
	}
	_, _ = stdout.Write(out)
	return 0
}

// indent puts each joined error on its own indented line, skipping empty
// lines.
func indent(err error) error {
	var lines []string
	for _, l := range strings.Split(err.Error(), "\n") {
		if strings.TrimSpace(l) != "" {
			lines = append(lines, "  - "+l)
		}
	}
	return errors.New(strings.Join(lines, "\n"))
}

func newLogger(w io.Writer, level, format string) (zerolog.Logger, error) {
	// zerolog's own error ("Unknown Level String: 'x', defaulting to
	// NoLevel") says it carries on, and "" parses as "log everything".
	lvl, err := zerolog.ParseLevel(strings.ToLower(level))
	if err != nil || level == "" {
		return zerolog.Logger{}, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	switch format {
	case "json":
	case "console":
		// Colours only on a terminal: escape codes in a file or a pipe are
		// noise.
		term := isTerminal(w)
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly, NoColor: !term,
			// Field values with control characters are quoted by the
			// writer; a message is not, and some carry an upstream's
			// words (a child's stderr): escaped, as gateway status does.
			FormatMessage: func(i any) string {
				if i == nil || i == "" {
					return ""
				}
				if s := printable(fmt.Sprint(i)); term {
					return "\x1b[1m" + s + "\x1b[0m"
				} else {
					return s
				}
			}}
	default:
		return zerolog.Logger{}, fmt.Errorf("--log-format %q: want json or console", format)
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

func serveHTTP(ctx context.Context, g *gateway.Server, cfg *gateway.Config) error {
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return &gateway.NotStartedError{Err: fmt.Errorf("listen: %w", err)}
	}
	g.Start(ctx)
	return g.Serve(ctx, l) // logs "listening on" once admin.listen is bound too
}

// stdioListWait bounds how long `gateway stdio` holds the agent's first
// requests for upstreams still making their first connection.
const stdioListWait = 30 * time.Second

func serveStdio(ctx context.Context, g *gateway.Server, log *zerolog.Logger) error {
	g.Start(ctx)
	// Let reachable upstreams connect and list their tools before the
	// agent's requests reach them, for at most 30 s from the start;
	// initialize (server/discover) and ping are answered at once (it waited before reading
	// anything: one upstream hanging in its handshake kept a desktop client
	// from starting the gateway for 30 s, found trying it from outside).
	deadline := time.Now().Add(stdioListWait)
	var ready atomic.Bool // once every upstream was tried, or the deadline passed: nothing to wait for
	g.MCPServer().AddReceivingMiddleware(func(next mcp.MethodHandler) mcp.MethodHandler {
		return func(rctx context.Context, method string, req mcp.Request) (mcp.Result, error) {
			switch {
			case ready.Load(), method == "initialize", method == "server/discover", method == "ping", strings.HasPrefix(method, "notifications/"):
			default:
				waitCtx, cancel := context.WithDeadline(rctx, deadline)
				if err := g.WaitTried(waitCtx); err == nil || !time.Now().Before(deadline) {
					ready.Store(true)
				}
				cancel()
			}
			return next(rctx, method, req)
		}
	})
	log.Info().Msg("serving one agent on stdio")
	ran := make(chan error, 1)
	go func() { ran <- g.MCPServer().Run(context.WithoutCancel(ctx), stdioFront(os.Stdin, os.Stdout, log)) }()
	select {
	case err := <-ran:
		if ctx.Err() != nil || errors.Is(err, io.EOF) {
			return nil
		}
		return err
	case <-ctx.Done():
	}
	// A signal drains the agent's calls in flight, then ends its session
	// (which ends Run); see gateway.Server.Close. A session whose answers
	// the agent does not read never ends (its writes wait for the agent,
	// and closing it waits for them): the gateway exits without it.
	_ = g.Close()
	t := time.NewTimer(stdioSessionGrace)
	defer t.Stop()
	select {
	case <-ran:
	case <-t.C:
		log.Warn().Dur("after_ms", stdioSessionGrace).Msg("the agent's session did not end: the agent is not reading the gateway's answers; exiting without it")
	}
	return nil
}

// stdioSessionGrace bounds the wait for the agent's session to end once the
// gateway has drained and closed it.
const stdioSessionGrace = 2 * time.Second

func classify(configPath, provider string, stdin io.Reader, stdout, stderr io.Writer) int {
	var rules []authmap.Rule
	if configPath != "" {
		cfg, err := loadConfig(configPath)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		rules = cfg.Classify.Rules
	}
	if err := checkProvider(provider, rules); err != nil {
		fmt.Fprintln(stderr, "gateway classify:", err)
		return 2
	}
	c, err := authmap.New(&authmap.Options{Rules: rules})
	if err != nil {
		fmt.Fprintln(stderr, "gateway classify:", err)
		return 1
	}
	resp, isHTTP, err := authmap.ParseHTTP(stdin)
	if err != nil {
		fmt.Fprintln(stderr, "gateway classify: reading stdin:", err)
		return 1
	}
	if provider != "" {
		resp.Provider = provider
	}
	var f authmap.Failure
	var ok bool
	if isHTTP {
		f, ok = c.Classify(resp, authmap.Knowledge{})
	} else {
		f, ok = c.ClassifyText(string(resp.Body), provider, authmap.Knowledge{})
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if !ok {
		_ = enc.Encode(map[string]any{"failure": false, "note": "no failure recognised in the input"})
		return 0
	}
	_ = enc.Encode(f)
	return 0
}

// checkProvider accepts a built-in provider (or an alias of one, such as
// azure) and any provider the config's classify rules define.
func checkProvider(p string, rules []authmap.Rule) error {
	if p == "" || authmap.NormalizeProvider(p) != "" {
		return nil
	}
	known := authmap.Providers()
	for _, r := range rules {
		if r.Provider == p {
			return nil
		}
		if r.Provider != "" && !slices.Contains(known, r.Provider) {
			known = append(known, r.Provider)
		}
	}
	return fmt.Errorf("--provider %q: unknown provider; want one of %s", p, strings.Join(known, ", "))
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
