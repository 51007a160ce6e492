package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// stdioEnv, set to "1" in the environment, makes the bench binary a stdio
// echo MCP server instead of the load driver. The stdio variants' gateway
// config runs the driver's own executable with it, so the stdio upstream is
// the same go-sdk server with the same echo tool as the HTTP one, and no
// other binary has to be built or found.
const stdioEnv = "CREDGATE_BENCH_STDIO"

// stdioEchoTool is the tool the stdio echo server exposes.
const stdioEchoTool = "echo"

// serveStdio serves the echo tool on stdin/stdout until stdin closes (the
// gateway stopped or restarted the child). Errors go to stderr, which the
// gateway logs.
func serveStdio(stderr io.Writer) int {
	s := newEchoServer("echo-stdio", []string{stdioEchoTool})
	if err := s.Run(context.Background(), &mcp.StdioTransport{}); err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintln(stderr, "bench stdio echo:", err)
		return 1
	}
	return 0
}

// stdioCommand is the command line the gateway runs for a stdio echo
// upstream: this executable, with stdioEnv set through the upstream's env.
func stdioCommand() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("stdio upstream: %w", err)
	}
	return exe, nil
}
