package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/rs/zerolog"

	"github.com/credgate/credgate/gateway"
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
	var f lineFilter
	left := 0 // lines left out, for bounded warnings
	leaveOut := func(why string, n int) {
		if left++; left <= 10 || left%100 == 0 { // a flood of bad lines writes a bounded log
			log.Warn().Int("bytes", n).Int("left_out", left).Msg("agent line " + why + "; left out")
		}
	}
	for {
		chunk, err := br.ReadSlice('\n')
		over := len(line)+len(chunk) > max
		if !over {
			line = append(line, chunk...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			if over {
				n := len(line) + len(chunk)
				line = line[:0]
				for errors.Is(err, bufio.ErrBufferFull) { // the rest of the line
					var rest []byte
					rest, err = br.ReadSlice('\n')
					n += len(rest)
				}
				leaveOut("longer than the bound", n)
				if err != nil {
					_ = w.CloseWithError(err)
					return
				}
			}
			continue
		}
		if over {
			leaveOut("longer than the bound", len(line)+len(chunk))
			line = line[:0]
		} else if msg := bytes.TrimSpace(line); len(msg) > 0 {
			if why := f.refuse(msg); why == "" {
				if _, werr := w.Write(line); werr != nil {
					return
				}
			} else {
				leaveOut(why, len(msg))
			}
		}
		line = line[:0]
		if err != nil {
			_ = w.CloseWithError(err) // io.EOF: the agent is gone
			return
		}
	}
}

// lineFilter decides which agent lines the SDK's stdio transport can take.
type lineFilter struct {
	noBatches bool // the agent asked for 2025-06-18 or later, which has no batches
}

// refuse says why the SDK's transport would end the session on msg, or ""
// when it takes it: msg must be one JSON value (nothing after it), a
// message the SDK decodes, or a batch it reads (non-empty, every member a
// message, ids unique) from an agent whose protocol has batches.
func (f *lineFilter) refuse(msg []byte) string {
	if !json.Valid(msg) {
		return "that is not JSON"
	}
	if msg[0] != '[' {
		m, err := jsonrpc.DecodeMessage(msg)
		if err != nil {
			return "that is not a JSON-RPC message"
		}
		if req, ok := m.(*jsonrpc.Request); ok && req.Method == "initialize" {
			var p struct {
				ProtocolVersion string `json:"protocolVersion"`
			}
			if json.Unmarshal(req.Params, &p) == nil && p.ProtocolVersion >= "2025-06-18" {
				f.noBatches = true
			}
		}
		return ""
	}
	if f.noBatches {
		return "that is a batch, which the agent's protocol does not have"
	}
	var members []json.RawMessage
	if json.Unmarshal(msg, &members) != nil || len(members) == 0 {
		return "that is an empty batch"
	}
	if len(members) > gateway.MaxBatch {
		// As on /mcp: the SDK runs every member at once and holds every
		// answer (one line of 35,000 calls took the gateway to 600 MB).
		return fmt.Sprintf("that is a batch of %d messages; at most %d are served in one", len(members), gateway.MaxBatch)
	}
	ids := map[string]bool{}
	for _, raw := range members {
		m, err := jsonrpc.DecodeMessage(raw)
		if err != nil {
			return "that is a batch holding something that is not a JSON-RPC message"
		}
		if req, ok := m.(*jsonrpc.Request); ok && req.IsCall() {
			id := fmt.Sprint(req.ID.Raw())
			if ids[id] {
				return "that is a batch with an id twice"
			}
			ids[id] = true
		}
	}
	return ""
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
