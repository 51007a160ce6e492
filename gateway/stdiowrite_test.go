package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/rs/zerolog"
)

// pipeConn is a stdioConn writing on a pipe, as to a child's stdin, whose
// other end the test reads.
func pipeConn(t *testing.T) (*stdioConn, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	c := newStdioConn(strings.NewReader(""), w, newResponseLimit("a", 1<<20, zerolog.Nop()))
	t.Cleanup(func() { _ = c.Close() })
	return c, r
}

// readLines reads n lines from r, failing the test if they do not come
// within d.
func pipeLines(t *testing.T, r *os.File, n int, d time.Duration) []string {
	t.Helper()
	if err := r.SetReadDeadline(time.Now().Add(d)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReaderSize(r, 1<<20)
	var lines []string
	for range n {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("after %d lines: %v", len(lines), err)
		}
		lines = append(lines, line)
	}
	return lines
}

// cancelWhenWriting returns a context that ends once the writer has begun
// to write on the pipe r (a fixed deadline could end before the request was
// even encoded, on a loaded machine), and a function returning the byte
// read from r to tell.
func cancelWhenWriting(t *testing.T, r *os.File) (context.Context, func() string) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	first := make(chan string, 1)
	go func() {
		defer cancel()
		b := make([]byte, 1)
		if err := r.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			first <- ""
			return
		}
		n, _ := r.Read(b)
		first <- string(b[:n])
	}()
	return ctx, func() string { return <-first }
}

// cancelledFor reports whether line is a notifications/cancelled for id.
func cancelledFor(line string, id any) bool {
	var m struct {
		Method string
		Params struct{ RequestID any }
	}
	return json.Unmarshal([]byte(line), &m) == nil && m.Method == "notifications/cancelled" && m.Params.RequestID == id
}

// TestStdioCallCutShortIsCancelled: credgate's own call (stdioCallTool's
// path) whose request was given up part way (pipe full, the call's timeout
// ended) is finished in the background, then cancelled, as the SDK path's is.
func TestStdioCallCutShortIsCancelled(t *testing.T) {
	t.Parallel()
	c, r := pipeConn(t)
	ctx, first := cancelWhenWriting(t, r)
	params := `{"name":"x","arguments":{"pad":"` + strings.Repeat("p", 1<<20) + `"}}`
	if _, err := c.call(ctx, "tools/call", json.RawMessage(params)); err == nil {
		t.Fatal("call with nobody reading succeeded")
	}
	b := first()
	lines := pipeLines(t, r, 2, 10*time.Second)
	lines[0] = b + lines[0]
	if !json.Valid([]byte(lines[0])) {
		t.Fatalf("request torn: %.80s...", lines[0])
	}
	if !cancelledFor(lines[1], "cg-1") {
		t.Errorf("after the request: %s; want notifications/cancelled for cg-1", lines[1])
	}
}

// TestStdioWriteCutShortIsCancelled is the SDK path's (Write) control.
func TestStdioWriteCutShortIsCancelled(t *testing.T) {
	t.Parallel()
	c, r := pipeConn(t)
	ctx, first := cancelWhenWriting(t, r)
	id, _ := jsonrpc.MakeID(float64(7))
	req := &jsonrpc.Request{ID: id, Method: "tools/call", Params: json.RawMessage(`{"pad":"` + strings.Repeat("p", 1<<20) + `"}`)}
	if err := c.Write(ctx, req); err == nil {
		t.Fatal("write with nobody reading succeeded")
	}
	b := first()
	lines := pipeLines(t, r, 2, 10*time.Second)
	lines[0] = b + lines[0]
	if !json.Valid([]byte(lines[0])) {
		t.Fatalf("request torn")
	}
	if !cancelledFor(lines[1], float64(7)) {
		t.Errorf("after the request: %s; want notifications/cancelled for 7", lines[1])
	}
}

// TestStdioWriteDeadlineNotLeft: writes whose contexts end at any moment,
// each followed by a write with no deadline, never leave the pipe's write
// deadline set (the next write would fail at once), and the reader sees
// whole lines only.
func TestStdioWriteDeadlineNotLeft(t *testing.T) {
	t.Parallel()
	c, r := pipeConn(t)
	var wg sync.WaitGroup
	bad := make(chan string, 1)
	wg.Go(func() {
		br := bufio.NewReaderSize(r, 4<<20)
		for {
			line, err := br.ReadBytes('\n')
			if err != nil {
				return
			}
			if !json.Valid(line) {
				select {
				case bad <- string(line[:min(len(line), 80)]):
				default:
				}
			}
		}
	})
	msg := func(n int) []byte {
		return []byte(`{"jsonrpc":"2.0","method":"x","params":{"p":"` + strings.Repeat("p", n) + `"}}`)
	}
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; i < 3000 && time.Now().Before(deadline); i++ {
		ctx, cancel := context.WithCancel(t.Context())
		tm := time.AfterFunc(time.Duration(rand.IntN(200))*time.Microsecond, cancel)
		_ = c.writeLine(ctx, msg(rand.IntN(200<<10)), jsonrpc.ID{}, 0)
		tm.Stop()
		cancel()
		ctx2, cancel2 := context.WithTimeout(t.Context(), 10*time.Second)
		if err := c.writeLine(ctx2, msg(10), jsonrpc.ID{}, 0); err != nil {
			cancel2()
			t.Fatalf("write %d after a cancelled one: %v", i, err)
		}
		cancel2()
		if err := c.writeLine(context.Background(), msg(10), jsonrpc.ID{}, 0); err != nil {
			t.Fatalf("write %d (no ctx deadline) after a cancelled one: %v", i, err)
		}
	}
	_ = c.Close()
	_ = r.Close()
	wg.Wait()
	select {
	case l := <-bad:
		t.Errorf("the reader read a torn line: %s", l)
	default:
	}
}

// TestStdioCloseDuringBackgroundWrite: closing the connection while a write
// given up part way is being finished ends that write, and later writes fail
// at once rather than wait.
func TestStdioCloseDuringBackgroundWrite(t *testing.T) {
	t.Parallel()
	c, _ := pipeConn(t)
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if err := c.writeLine(ctx, []byte(strings.Repeat("p", 1<<20)), jsonrpc.ID{}, 0); err == nil {
		t.Fatal("write with nobody reading succeeded")
	}
	_ = c.Close()
	done := make(chan error, 1)
	go func() { done <- c.writeLine(context.Background(), []byte("{}"), jsonrpc.ID{}, 0) }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("write after Close succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a write after Close waited for the background write")
	}
}

// BenchmarkStdioWriteLine: one request-sized line per op on a pipe a
// goroutine drains, with a call's context (a timeout), as stdioCallTool
// writes them.
func BenchmarkStdioWriteLine(b *testing.B) {
	r, w, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	c := newStdioConn(strings.NewReader(""), w, newResponseLimit("a", 1<<20, zerolog.Nop()))
	go func() {
		buf := make([]byte, 1<<20)
		for {
			if _, err := r.Read(buf); err != nil {
				return
			}
		}
	}()
	defer r.Close()
	defer c.Close()
	line := []byte(`{"jsonrpc":"2.0","id":"cg-1","method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}`)
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	b.ReportAllocs()
	for b.Loop() {
		cctx, ccancel := context.WithTimeout(ctx, time.Minute)
		if err := c.writeLine(cctx, line, jsonrpc.ID{}, 0); err != nil {
			b.Fatal(err)
		}
		ccancel()
	}
}
