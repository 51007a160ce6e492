package authmap

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
)

// ParseHTTP reads what `gateway classify` gets on stdin: a raw HTTP response (status line
// "HTTP/1.1 401 Unauthorized", headers, blank line, body; HTTP/2 status lines, LF-only line ends
// and a missing reason phrase are accepted), or, when the input does not start with "HTTP/",
// plain text returned as Body with Status 0. isHTTP tells which.
func ParseHTTP(r io.Reader) (resp Response, isHTTP bool, err error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return Response{}, false, fmt.Errorf("read input: %w", err)
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n\ufeff")
	trimmed = bytes.TrimPrefix(trimmed, []byte("\xef\xbb\xbf"))
	if !bytes.HasPrefix(trimmed, []byte("HTTP/")) {
		return Response{Body: data}, false, nil
	}
	br := bufio.NewReader(bytes.NewReader(trimmed))
	line, err := br.ReadString('\n')
	if err != nil && err != io.EOF {
		return Response{}, true, fmt.Errorf("read status line: %w", err)
	}
	fields := strings.Fields(strings.TrimRight(line, "\r\n"))
	if len(fields) < 2 {
		return Response{}, true, fmt.Errorf("malformed status line %q", strings.TrimSpace(line))
	}
	status, perr := strconv.Atoi(fields[1])
	if perr != nil || status < 100 || status > 999 {
		return Response{}, true, fmt.Errorf("malformed status code in %q", strings.TrimSpace(line))
	}
	resp = Response{Status: status, Header: http.Header{}}
	lastKey := ""
	for {
		hl, err := br.ReadString('\n')
		t := strings.TrimRight(hl, "\r\n")
		if t == "" {
			break
		}
		if (t[0] == ' ' || t[0] == '\t') && len(resp.Header) > 0 {
			// obsolete line folding: continue the last header
			if lastKey != "" {
				vs := resp.Header[lastKey]
				vs[len(vs)-1] += " " + strings.TrimSpace(t)
			}
		} else if name, value, ok := strings.Cut(t, ":"); ok && strings.TrimSpace(name) != "" {
			key := textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(name))
			resp.Header.Add(key, strings.TrimSpace(value))
			lastKey = key
		}
		if err != nil {
			break
		}
	}
	body, _ := io.ReadAll(br)
	resp.Body = body
	return resp, true, nil
}
