package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"
)

// agentLines copies the agent's stdin to w line by line, leaving out each
// line that is not a JSON-RPC message (or a batch), and a line longer than
// max, with a warning: the SDK's stdio transport ends the session at the
// first such line, losing the answers to the calls in flight, where a
// server talked to directly skips it (found trying the gateway from
// outside: one "garbage line" stopped `gateway stdio`). The line's text is
// not logged: it may hold a secret. w is closed when r ends.
func agentLines(r io.Reader, w *io.PipeWriter, max int, log *zerolog.Logger) {
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		over := len(line)+len(chunk) > max
		if !over {
			line = append(line, chunk...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			if over {
				line = line[:0]
				for errors.Is(err, bufio.ErrBufferFull) { // the rest of the line
					_, err = br.ReadSlice('\n')
				}
				log.Warn().Int("max_bytes", max).Msg("agent line longer than the bound; left out")
				if err != nil {
					_ = w.CloseWithError(err)
					return
				}
			}
			continue
		}
		if over {
			log.Warn().Int("max_bytes", max).Msg("agent line longer than the bound; left out")
			line = line[:0]
		} else if msg := bytes.TrimSpace(line); len(msg) > 0 {
			if readable(msg) {
				if _, werr := w.Write(line); werr != nil {
					return
				}
			} else {
				log.Warn().Int("bytes", len(msg)).Msg("agent line that is not a JSON-RPC message; left out")
			}
		}
		line = line[:0]
		if err != nil {
			_ = w.CloseWithError(err) // io.EOF: the agent is gone
			return
		}
	}
}

// readable reports whether msg is a JSON-RPC message the SDK can take: one
// it decodes, or a batch (an array, which the SDK reads member by member).
func readable(msg []byte) bool {
	if !json.Valid(msg) { // one value, nothing after it
		return false
	}
	if msg[0] == '[' {
		return true
	}
	_, err := jsonrpc.DecodeMessage(msg)
	return err == nil
}

// stdioFront is the transport of `gateway stdio`: the SDK's, over the
// agent's lines as agentLines passes them.
func stdioFront(stdin io.Reader, stdout io.Writer, log *zerolog.Logger) mcp.Transport {
	pr, pw := io.Pipe()
	go agentLines(stdin, pw, mcp.DefaultMaxLineLength, log)
	return &mcp.IOTransport{Reader: pr, Writer: nopWriteCloser{stdout}}
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
