package gateway

import (
	"bytes"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
)

// ownAnswer recognizes, in a line of a stdio child's output, the answer
// to one of credgate's own calls (stdioConn.call): an object whose members
// are "jsonrpc":"2.0", "id":"cg-<n>" and "result", in any order and
// spacing, and returns n and the result's bytes (within line). Anything
// else, an error answer included, returns ok false and is decoded in full.
// It saves the full decoding of the message, which the call path repeats
// on the result (issue 12: a stdio call's CPU); a result that is not valid
// JSON fails its call when it is decoded, as a line the message decoder
// refused would have (skipped, and the call left to its timeout).
func ownAnswer(line []byte) (n int64, result []byte, ok bool) {
	if len(line) < 2 || line[0] != '{' || line[len(line)-1] != '}' {
		return 0, nil, false
	}
	var version, id bool
	i := 1
	for {
		i = skipSpace(line, i)
		if i >= len(line) || line[i] != '"' {
			return 0, nil, false
		}
		end := bytes.IndexByte(line[i+1:], '"')
		if end < 0 {
			return 0, nil, false
		}
		key := line[i+1 : i+1+end]
		if bytes.IndexByte(key, '\\') >= 0 {
			return 0, nil, false
		}
		i = skipSpace(line, i+2+end)
		if i >= len(line) || line[i] != ':' {
			return 0, nil, false
		}
		start := skipSpace(line, i+1)
		stop := valueEnd(line, start)
		if stop < 0 {
			return 0, nil, false
		}
		value := line[start:stop]
		switch string(key) {
		case "jsonrpc":
			if version || string(value) != `"2.0"` {
				return 0, nil, false
			}
			version = true
		case "id":
			if id {
				return 0, nil, false
			}
			if n, ok = ownID(value); !ok {
				return 0, nil, false
			}
			id = true
		case "result":
			if result != nil || len(value) == 0 {
				return 0, nil, false
			}
			result = value
		default:
			return 0, nil, false
		}
		i = skipSpace(line, stop)
		if i >= len(line) {
			return 0, nil, false
		}
		if line[i] == '}' {
			if i != len(line)-1 || !version || !id || result == nil {
				return 0, nil, false
			}
			return n, result, true
		}
		if line[i] != ',' {
			return 0, nil, false
		}
		i++
	}
}

// ownID parses the id of credgate's own call n, `"cg-<n>"`.
func ownID(v []byte) (int64, bool) {
	const head = `"` + rawIDPrefix
	if len(v) < len(head)+2 || !bytes.HasPrefix(v, []byte(head)) || v[len(v)-1] != '"' {
		return 0, false
	}
	digits := v[len(head) : len(v)-1]
	if len(digits) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// valueEnd returns the index just past the JSON value that starts at b[i]:
// a string, an object or array (strings inside them skipped, brackets
// counted), or a literal or number (up to the next delimiter); -1 if it
// does not end within b. It does not validate: the result's decoder does.
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	depth := 0
	for j := i; j < len(b); j++ {
		switch b[j] {
		case '"':
			j = stringEnd(b, j)
			if j < 0 {
				return -1
			}
			if depth == 0 {
				return j + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return j // a literal's end: the enclosing object's
			}
			if depth--; depth == 0 {
				return j + 1
			}
		case ',', ' ', '\t', '\r', '\n':
			if depth == 0 {
				return j
			}
		}
	}
	return -1
}

// stringEnd returns the index of the quote that closes the string whose
// opening quote is b[i], or -1.
func stringEnd(b []byte, i int) int {
	for {
		k := bytes.IndexByte(b[i+1:], '"')
		if k < 0 {
			return -1
		}
		i += 1 + k
		bs := 0
		for p := i - 1; p >= 0 && b[p] == '\\'; p-- {
			bs++
		}
		if bs%2 == 0 {
			return i
		}
	}
}

// ownResponse is the response ownAnswer found, for the waiting call: its
// result copied out of the line (the reader's buffer is reused).
func ownResponse(result []byte) *jsonrpc.Response {
	return &jsonrpc.Response{Result: append([]byte(nil), result...)}
}
