package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// The raw tools/list walk times the server's serving of the whole union
// without the go-sdk client's decoding of it: each page is read in full, but
// only its nextCursor is searched out while the clock runs. The pages are
// checked (decoded, tools counted, cursor confirmed) after the clock stops.

const rawProtocolVersion = "2025-11-25"

// rawSession is an MCP session over streamable HTTP made of plain requests.
type rawSession struct {
	hc       *http.Client
	endpoint string
	id       string // Mcp-Session-Id
}

// rawConnect opens a session: initialize, then notifications/initialized.
func rawConnect(ctx context.Context, hc *http.Client, endpoint string) (*rawSession, error) {
	s := &rawSession{hc: hc, endpoint: endpoint}
	body, hdr, err := s.post(ctx, []byte(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"`+
		rawProtocolVersion+`","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}`), http.StatusOK)
	if err != nil {
		return nil, fmt.Errorf("raw initialize %s: %w", endpoint, err)
	}
	if s.id = hdr.Get("Mcp-Session-Id"); s.id == "" {
		return nil, fmt.Errorf("raw initialize %s: no Mcp-Session-Id header", endpoint)
	}
	var init struct {
		Result *struct {
			ProtocolVersion string `json:"protocolVersion"`
		} `json:"result"`
	}
	if err := decodeRPC(body, &init); err != nil {
		return nil, errors.Join(fmt.Errorf("raw initialize %s: %w", endpoint, err), s.Close())
	}
	if init.Result == nil || init.Result.ProtocolVersion != rawProtocolVersion {
		return nil, errors.Join(fmt.Errorf("raw initialize %s: negotiated %+v, want %s", endpoint, init.Result, rawProtocolVersion), s.Close())
	}
	if _, _, err := s.post(ctx, []byte(`{"jsonrpc":"2.0","method":"notifications/initialized"}`), http.StatusAccepted); err != nil {
		return nil, errors.Join(fmt.Errorf("raw notifications/initialized %s: %w", endpoint, err), s.Close())
	}
	return s, nil
}

// post sends one JSON-RPC message and returns the whole response body.
func (s *rawSession) post(ctx context.Context, msg []byte, wantStatus int) ([]byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.endpoint, bytes.NewReader(msg))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if s.id != "" {
		req.Header.Set("Mcp-Session-Id", s.id)
		req.Header.Set("Mcp-Protocol-Version", rawProtocolVersion)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode != wantStatus {
		return nil, nil, fmt.Errorf("HTTP %s, want %d: %.200s", resp.Status, wantStatus, body)
	}
	return body, resp.Header, nil
}

// Close ends the session on the server (DELETE), best effort.
func (s *rawSession) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, s.endpoint, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Mcp-Session-Id", s.id)
	req.Header.Set("Mcp-Protocol-Version", rawProtocolVersion)
	resp, err := s.hc.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// rawListAll pages through tools/list with plain HTTP on a fresh session,
// timing only the walk, then checks every page it read.
func rawListAll(ctx context.Context, hc *http.Client, endpoint string) (listResult, error) {
	s, err := rawConnect(ctx, hc, endpoint)
	if err != nil {
		return listResult{}, err
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()

	var (
		r       listResult
		pages   [][]byte
		cursors []string
		cursor  string
	)
	t0 := time.Now()
	for len(pages) < maxPages {
		params := `{}`
		if len(pages) > 0 {
			params = `{"cursor":` + strconv.Quote(cursor) + `}`
		}
		msg := `{"jsonrpc":"2.0","id":` + strconv.Itoa(len(pages)+2) + `,"method":"tools/list","params":` + params + `}`
		body, _, err := s.post(ctx, []byte(msg), http.StatusOK)
		if err != nil {
			return r, fmt.Errorf("raw tools/list page %d: %w", len(pages)+1, err)
		}
		pages = append(pages, body)
		if cursor, err = findNextCursor(body); err != nil {
			return r, fmt.Errorf("raw tools/list page %d: %w", len(pages), err)
		}
		cursors = append(cursors, cursor)
		if cursor == "" {
			break
		}
	}
	r.elapsed = time.Since(t0)
	if cursor != "" {
		return r, fmt.Errorf("raw tools/list: still paging after %d pages", maxPages)
	}

	// Untimed: decode each page and confirm what the search found.
	for i, body := range pages {
		var page struct {
			Result *struct {
				Tools      []struct{ Name string } `json:"tools"`
				NextCursor string                  `json:"nextCursor"`
			} `json:"result"`
		}
		if err := decodeRPC(body, &page); err != nil {
			return r, fmt.Errorf("raw tools/list page %d: %w", i+1, err)
		}
		if page.Result == nil {
			return r, fmt.Errorf("raw tools/list page %d: no result", i+1)
		}
		if page.Result.NextCursor != cursors[i] {
			return r, fmt.Errorf("raw tools/list page %d: cursor search found %q, page says %q", i+1, cursors[i], page.Result.NextCursor)
		}
		if i == 0 {
			r.firstPage = len(page.Result.Tools)
		}
		r.pages++
		r.tools += len(page.Result.Tools)
	}
	return r, nil
}

var nextCursorKey = []byte(`"nextCursor":`)

// findNextCursor returns a tools/list response's nextCursor ("" if none)
// without decoding the tools: the result's last member is searched from the
// end. rawListAll confirms it against a full decode afterwards, so a tool
// that happened to contain the key would show up as an error, not a wrong
// number.
func findNextCursor(body []byte) (string, error) {
	i := bytes.LastIndex(body, nextCursorKey)
	if i < 0 {
		return "", nil
	}
	rest := bytes.TrimLeft(body[i+len(nextCursorKey):], " \t\r\n")
	if bytes.HasPrefix(rest, []byte("null")) {
		return "", nil
	}
	if len(rest) == 0 || rest[0] != '"' {
		return "", fmt.Errorf("nextCursor is not a string: %.40q", rest)
	}
	end := 1
	for end < len(rest) && rest[end] != '"' {
		if rest[end] == '\\' {
			end++
		}
		end++
	}
	if end >= len(rest) {
		return "", errors.New("unterminated nextCursor")
	}
	var c string
	if err := json.Unmarshal(rest[:end+1], &c); err != nil {
		return "", fmt.Errorf("nextCursor: %w", err)
	}
	return c, nil
}

// decodeRPC decodes a JSON-RPC response body, plain JSON or one SSE message
// event, into v, and turns a JSON-RPC error into an error.
func decodeRPC(body []byte, v any) error {
	payload, err := ssePayload(body)
	if err != nil {
		return err
	}
	var e struct {
		Error *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(payload, &e); err != nil {
		return fmt.Errorf("decode response: %w", err)
	}
	if e.Error != nil {
		return fmt.Errorf("JSON-RPC error %d: %s", e.Error.Code, e.Error.Message)
	}
	return json.Unmarshal(payload, v)
}

// ssePayload returns the JSON in body: body itself if it is not an event
// stream, else the data of its first message event (multi-line data joined
// with newlines, as SSE specifies).
func ssePayload(body []byte) ([]byte, error) {
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) > 0 && (t[0] == '{' || t[0] == '[') {
		return t, nil
	}
	for _, ev := range bytes.Split(bytes.ReplaceAll(body, []byte("\r\n"), []byte("\n")), []byte("\n\n")) {
		event := "message"
		var data [][]byte
		for line := range bytes.SplitSeq(ev, []byte("\n")) {
			field, value, _ := bytes.Cut(line, []byte(":"))
			value = bytes.TrimPrefix(value, []byte(" "))
			switch string(field) {
			case "event":
				event = string(value)
			case "data":
				data = append(data, value)
			}
		}
		if event == "message" && len(data) > 0 {
			return bytes.Join(data, []byte("\n")), nil
		}
	}
	return nil, fmt.Errorf("no message event in response: %.200q", body)
}
