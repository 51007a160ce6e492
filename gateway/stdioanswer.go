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
	var version, id bool
	whole := members(line, func(key, value, _ []byte) bool {
		switch string(key) {
		case "jsonrpc":
			if version || string(value) != `"2.0"` {
				return false
			}
			version = true
		case "id":
			if id {
				return false
			}
			if n, id = ownID(value); !id {
				return false
			}
		case "result":
			if result != nil || len(value) == 0 {
				return false
			}
			result = value
		default:
			return false
		}
		return true
	})
	if !whole || !version || !id || result == nil {
		return 0, nil, false
	}
	return n, result, true
}

// members calls each with the key, the value and the whole member (key to
// value) of each member of the JSON object line is, in order, while it
// returns true, and reports whether it did for every member of a line that
// holds one object and nothing after it. Keys with escapes stop it (no
// answer needs one). It does not validate values: see valueEnd.
func members(line []byte, each func(key, value, member []byte) bool) bool {
	if len(line) < 2 || line[0] != '{' || line[len(line)-1] != '}' {
		return false
	}
	i := 1
	for {
		i = skipSpace(line, i)
		if i >= len(line) || line[i] != '"' {
			return false
		}
		end := bytes.IndexByte(line[i+1:], '"')
		if end < 0 {
			return false
		}
		key, first := line[i+1:i+1+end], i
		if bytes.IndexByte(key, '\\') >= 0 {
			return false
		}
		i = skipSpace(line, i+2+end)
		if i >= len(line) || line[i] != ':' {
			return false
		}
		start := skipSpace(line, i+1)
		stop := valueEnd(line, start)
		if stop < 0 || !each(key, line[start:stop], line[first:stop]) {
			return false
		}
		i = skipSpace(line, stop)
		if i >= len(line) {
			return false
		}
		if line[i] == '}' {
			return i == len(line)-1
		}
		if line[i] != ',' {
			return false
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
