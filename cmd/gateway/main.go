// Command gateway runs credgate, an MCP gateway that federates many upstream
// MCP servers behind one endpoint and reports credential failures as typed
// objects.
//
//	gateway [serve] --config FILE [--listen ADDR]   serve /mcp over HTTP (default)
//	gateway stdio --config FILE                      serve one agent over stdio
//	gateway validate --config FILE                   check a config, list every problem
//	gateway classify [--provider P] < response       classify an HTTP response or text
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
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"github.com/credgate/credgate/authmap"
	"github.com/credgate/credgate/gateway"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

const usage = `credgate: one MCP endpoint over many upstream MCP servers.

Usage:
  gateway [serve] --config FILE [--listen ADDR]  serve /mcp, /health, /healthz, /readyz over HTTP
  gateway stdio --config FILE                     serve one agent over stdio (logs go to stderr)
  gateway validate --config FILE                  check a config; exit 1 listing every problem
  gateway classify [--config FILE] [--provider P] read an HTTP response (status line, headers,
                                                  blank line, body) or plain text on stdin and
                                                  print the failure object
  gateway --version | --help

The config path may also come from CREDGATE_CONFIG. Any setting can be
overridden by CREDGATE_<KEY> with "__" for nesting (CREDGATE_LISTEN,
CREDGATE_UPSTREAMS__GITHUB__URL).

Flags:
`

func main() {
	tuneGC()
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// tuneGC trades memory for CPU unless GOGC is set. A gateway's garbage is
// almost all per-request JSON buffers that die within the request; the SDK
// allocates several hundred KiB of them per call, so at the default GOGC=100
// the collector takes a third of the CPU. At 400 the heap stays small (a few
// MiB live) and the collector runs a quarter as often.
func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", os.Getenv(gateway.EnvPrefix+"CONFIG"), "config file (YAML); default $CREDGATE_CONFIG")
	listen := fs.String("listen", "", "listen address, overrides the config's listen (127.0.0.1:0 picks a free port)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	logFormat := fs.String("log-format", "json", "log format: json, or console for people")
	provider := fs.String("provider", "", "classify: provider hint (github, stripe, ...)")
	showVersion := fs.Bool("version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
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
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "gateway:", err)
		return 2
	}

	switch cmd {
	case "validate":
		if _, err := loadConfig(*configPath); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: ok\n", *configPath)
		return 0
	case "classify":
		return classify(*configPath, *provider, stdin, stdout, stderr)
	case "serve", "stdio":
		cfg, err := loadConfig(*configPath)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		if *listen != "" {
			cfg.Listen = *listen
		}
		// The first SIGTERM or SIGINT starts a graceful shutdown (bounded by
		// shutdown_timeout); once it has begun, the signals get their default
		// action back, so a second one ends the process at once.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		context.AfterFunc(ctx, stop)
		if cmd == "stdio" {
			err = serveStdio(ctx, cfg, &log)
		} else {
			err = serveHTTP(ctx, cfg, &log)
		}
		if err != nil {
			log.Error().Err(err).Msg("gateway stopped")
			return 1
		}
		return 0
	default:
		fmt.Fprintf(stderr, "gateway: unknown command %q\n\n", cmd)
		fs.Usage()
		return 2
	}
}

func loadConfig(path string) (*gateway.Config, error) {
	if path == "" {
		return nil, errors.New("gateway: no config: pass --config FILE or set CREDGATE_CONFIG")
	}
	cfg, err := gateway.LoadConfig(path, os.Environ())
	if err != nil {
		return nil, fmt.Errorf("%s: invalid config:\n%w", path, indent(err))
	}
	return cfg, nil
}

// indent puts each joined error on its own indented line.
func indent(err error) error {
	lines := strings.Split(err.Error(), "\n")
	for i, l := range lines {
		lines[i] = "  - " + l
	}
	return errors.New(strings.Join(lines, "\n"))
}

func newLogger(w io.Writer, level, format string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		return zerolog.Logger{}, fmt.Errorf("--log-level %q: %w", level, err)
	}
	zerolog.TimeFieldFormat = time.RFC3339Nano
	switch format {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	default:
		return zerolog.Logger{}, fmt.Errorf("--log-format %q: want json or console", format)
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger(), nil
}

func serveHTTP(ctx context.Context, cfg *gateway.Config, log *zerolog.Logger) error {
	g, err := gateway.New(cfg, &gateway.Options{Version: buildVersion(), Logger: log})
	if err != nil {
		return err
	}
	defer g.Close()
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	g.Start(ctx)
	log.Info().Str("addr", l.Addr().String()).Int("upstreams", len(cfg.Upstreams)).
		Msgf("listening on http://%s/mcp", l.Addr())
	return g.Serve(ctx, l)
}

func serveStdio(ctx context.Context, cfg *gateway.Config, log *zerolog.Logger) error {
	g, err := gateway.New(cfg, &gateway.Options{Version: buildVersion(), Logger: log})
	if err != nil {
		return err
	}
	defer g.Close()
	g.Start(ctx)
	// Let reachable upstreams list their tools before the agent asks.
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_ = g.WaitTried(waitCtx)
	cancel()
	log.Info().Msg("serving one agent on stdio")
	// A signal drains the agent's calls in flight, then ends its session
	// (which ends Run); see gateway.Server.Close.
	context.AfterFunc(ctx, func() { _ = g.Close() })
	err = g.MCPServer().Run(context.WithoutCancel(ctx), &mcp.StdioTransport{})
	if ctx.Err() != nil || errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

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

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
