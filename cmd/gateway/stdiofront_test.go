package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/rs/zerolog"

	"github.com/credgate/credgate/gateway"
)

// TestAgentLinesSkipsBadLines: `gateway stdio` passes the agent's JSON-RPC
// lines on and leaves out, with a warning that does not quote them, the
// lines the SDK's transport would end the session on (found trying the
// gateway from outside: one bad line stopped the gateway).
func TestAgentLinesSkipsBadLines(t *testing.T) {
	t.Parallel()
	long := `{"jsonrpc":"2.0","id":9,"method":"ping","params":{"x":"` + strings.Repeat("a", 3000) + `"}}`
	var members []string
	for i := range gateway.MaxBatch + 1 {
		members = append(members, fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, 100+i))
	}
	bigBatch := "[" + strings.Join(members, ",") + "]"
	in := strings.Join([]string{
		`{"jsonrpc":"2.0","id":1,"method":"ping"}`,
		`garbage line secret-0123456789`,
		`{"jsonrpc":"2.0","id":2,"method":"ping"} trailing`,
		`{"jsonrpc":"2.0","id":true,"method":"ping"}`,
		``,
		long,
		`[{"jsonrpc":"2.0","id":3,"method":"ping"}]`,
		`[]`,
		`[1]`,
		`[{"jsonrpc":"2.0","id":5,"method":"ping"},{"jsonrpc":"2.0","id":5,"method":"ping"}]`,
		bigBatch, // more members than gateway.MaxBatch
		`{"jsonrpc":"2.0","id":6,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}`,
		`[{"jsonrpc":"2.0","id":7,"method":"ping"}]`, // no batches from 2025-06-18 on
		`{"jsonrpc":"2.0","id":4,"method":"ping"}`,   // no newline at the end
	}, "\n")
	var logs bytes.Buffer
	log := zerolog.New(&logs)
	pr, pw := io.Pipe()
	go agentLines(strings.NewReader(in), pw, 2000, nil, &log)
	out, err := io.ReadAll(pr)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"jsonrpc":"2.0","id":1,"method":"ping"}` + "\n" + `[{"jsonrpc":"2.0","id":3,"method":"ping"}]` + "\n" +
		`{"jsonrpc":"2.0","id":6,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}` + "\n" + `{"jsonrpc":"2.0","id":4,"method":"ping"}`
	if string(out) != want {
		t.Errorf("passed on:\n%s\nwant:\n%s", out, want)
	}
	if n := strings.Count(logs.String(), "left out"); n != 9 {
		t.Errorf("%d warnings, want 9 (three bad lines, one too long, five bad batches):\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "secret-0123456789") {
		t.Errorf("a left-out line is quoted in the log:\n%s", logs.String())
	}
}

// TestAgentLinesBoundsCallsInFlight: `gateway stdio` reads no more of the
// agent's lines while maxAgentCalls of its requests are unanswered, and
// reads on as answers go out (an agent writing requests without reading the
// answers grew the gateway without bound). A request whose id is already in
// flight, which the SDK leaves unanswered, takes no place for good.
func TestAgentLinesBoundsCallsInFlight(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var in strings.Builder
		in.WriteString(`{"jsonrpc":"2.0","id":1,"method":"ping"}` + "\n") // answered below
		in.WriteString(`{"jsonrpc":"2.0","id":1,"method":"ping"}` + "\n") // its id in flight: left unanswered by the SDK
		in.WriteString(`{"jsonrpc":"2.0","method":"notifications/initialized"}` + "\n")
		for i := range 2 * maxAgentCalls {
			fmt.Fprintf(&in, `{"jsonrpc":"2.0","id":%d,"method":"tools/list"}`+"\n", 100+i)
			if i == maxAgentCalls-1 {
				// Right after the first request held back: the agent's
				// notification still passes, ahead of it.
				in.WriteString(`{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":100}}` + "\n")
			}
		}
		log := zerolog.Nop()
		pr, pw := io.Pipe()
		gate := newCallGate()
		go agentLines(strings.NewReader(in.String()), pw, 1<<20, gate, &log)
		var mu sync.Mutex
		read := 0
		go func() {
			br := bufio.NewReader(pr)
			for {
				if _, err := br.ReadString('\n'); err != nil {
					return
				}
				mu.Lock()
				read++
				mu.Unlock()
			}
		}()
		lines := func() int {
			synctest.Wait()
			mu.Lock()
			defer mu.Unlock()
			return read
		}
		// Ids 1 and 100..226 fill the bound; the duplicate and the
		// notifications pass too, the cancellation after the request held.
		if got, want := lines(), 3+maxAgentCalls-1+1; got != want {
			t.Fatalf("%d lines read with nothing answered, want %d", got, want)
		}
		out := answerWriter{io.Discard, gate}
		_, _ = out.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":{}}` + "\n"))
		_, _ = out.Write([]byte(`{"jsonrpc":"2.0","method":"notifications/message","params":{}}` + "\n")) // frees nothing
		_, _ = out.Write([]byte(`[{"jsonrpc":"2.0","id":100,"result":{}},{"jsonrpc":"2.0","id":101,"error":{"code":-32603,"message":"x"}}]` + "\n"))
		if got, want := lines(), 3+maxAgentCalls-1+1+3; got != want {
			t.Fatalf("%d lines read after three answers, want %d", got, want)
		}
		for i := range 2 * maxAgentCalls {
			_, _ = fmt.Fprintf(out, `{"jsonrpc":"2.0","id":%d,"result":{}}`+"\n", 100+i)
		}
		if got, want := lines(), 3+2*maxAgentCalls+1; got != want {
			t.Fatalf("%d lines read once all were answered, want %d", got, want)
		}
	})
}

// TestAgentLinesCancelHeld: the agent's cancellation of the request held
// back past the bound drops that request, which is never sent: passed
// ahead of it, the cancellation was lost and the request ran anyway.
func TestAgentLinesCancelHeld(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var in strings.Builder
		for i := range maxAgentCalls + 1 { // the last is held back
			fmt.Fprintf(&in, `{"jsonrpc":"2.0","id":%d,"method":"tools/list"}`+"\n", i)
		}
		held := maxAgentCalls
		fmt.Fprintf(&in, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":%d,"reason":"x"}}`+"\n", 3) // not the held one: passes
		fmt.Fprintf(&in, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":%d}}`+"\n", held)
		fmt.Fprintf(&in, `{"jsonrpc":"2.0","id":"after","method":"ping"}`+"\n")
		log := zerolog.Nop()
		pr, pw := io.Pipe()
		gate := newCallGate()
		go agentLines(strings.NewReader(in.String()), pw, 1<<20, gate, &log)
		read := collectLines(pr)
		if n := len(read()); n != maxAgentCalls+1 {
			t.Fatalf("%d lines read with the bound full, want %d (the requests that fit, the other cancellation)", n, maxAgentCalls+1)
		}
		out := answerWriter{io.Discard, gate}
		_, _ = fmt.Fprintf(out, `{"jsonrpc":"2.0","id":%d,"result":{}}`+"\n", 0)
		lines := read()
		if n := len(lines); n != maxAgentCalls+2 || !strings.Contains(lines[n-1], `"after"`) {
			t.Fatalf("after one answer the last lines read are %q; want the ping after the cancelled request", lines[max(0, n-2):])
		}
		for _, l := range lines {
			if strings.Contains(l, fmt.Sprintf(`"id":%d,`, held)) || strings.Contains(l, fmt.Sprintf(`"requestId":%d}`, held)) {
				t.Errorf("the cancelled held request, or its cancellation, was passed on: %s", l)
			}
		}
	})
}

// TestCodedAnswer: an error answer of code 0 (the SDK's answer to a
// request cancelled before its handler ran) goes to the agent with -32603;
// every other message is written as it is.
func TestCodedAnswer(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		`{"jsonrpc":"2.0","id":5,"error":{"code":0,"message":"context canceled"}}` + "\n":        `{"jsonrpc":"2.0","id":5,"error":{"code":-32603,"message":"context canceled"}}` + "\n",
		`{"jsonrpc":"2.0","id":"a","error":{"code":-32602,"message":"bad"}}` + "\n":              `{"jsonrpc":"2.0","id":"a","error":{"code":-32602,"message":"bad"}}` + "\n",
		`{"jsonrpc":"2.0","id":6,"result":{"content":[{"type":"text","text":"\"code\":0"}]}}`:    `{"jsonrpc":"2.0","id":6,"result":{"content":[{"type":"text","text":"\"code\":0"}]}}`,
		`{"jsonrpc":"2.0","method":"notifications/message","params":{"data":{"code":0}}}` + "\n": `{"jsonrpc":"2.0","method":"notifications/message","params":{"data":{"code":0}}}` + "\n",
	} {
		var buf bytes.Buffer
		n, err := answerWriter{&buf, newCallGate()}.Write([]byte(in))
		if err != nil || n != len(in) || buf.String() != want {
			t.Errorf("%s written as %s (%d, %v); want %s", in, buf.String(), n, err, want)
		}
	}
}

// TestAgentLinesCancelQueued: past the bound, the agent's further requests
// are held back in order, and a cancellation that comes after some of them
// still drops the one it names, unsent (found trying the gateway from
// outside: the reader stopped at the first request after the one held, so
// the cancellation was read only once that one had gone out). The rest go
// out in order as answers free their places.
func TestAgentLinesCancelQueued(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		var in strings.Builder
		const total = maxAgentCalls + 12
		for i := range total {
			fmt.Fprintf(&in, `{"jsonrpc":"2.0","id":%d,"method":"tools/list"}`+"\n", i)
		}
		cancelled := maxAgentCalls + 1
		fmt.Fprintf(&in, `{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":%d}}`+"\n", cancelled)
		log := zerolog.Nop()
		pr, pw := io.Pipe()
		gate := newCallGate()
		go agentLines(strings.NewReader(in.String()), pw, 1<<20, gate, &log)
		read := collectLines(pr)
		if n := len(read()); n != maxAgentCalls {
			t.Fatalf("%d lines read with the bound full, want %d", n, maxAgentCalls)
		}
		out := answerWriter{io.Discard, gate}
		for i := range total {
			_, _ = fmt.Fprintf(out, `{"jsonrpc":"2.0","id":%d,"result":{}}`+"\n", i)
			read()
		}
		lines := read()
		if len(lines) != total-1 {
			t.Errorf("%d lines passed; want every request but the cancelled one (%d)", len(lines), total-1)
		}
		next := 0
		for _, l := range lines {
			if next == cancelled {
				next++
			}
			if want := fmt.Sprintf(`"id":%d,`, next); !strings.Contains(l, want) {
				t.Fatalf("line %q out of order; want id %d", l, next)
			}
			next++
		}
	})
}

// collectLines reads r's lines in the background, in a synctest bubble, and
// returns a function giving those read once every goroutine is idle.
func collectLines(r io.Reader) func() []string {
	var mu sync.Mutex
	var got []string
	go func() {
		br := bufio.NewReader(r)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, l)
			mu.Unlock()
		}
	}()
	return func() []string {
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}
