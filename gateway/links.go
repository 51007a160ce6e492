package gateway

import (
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Resource links in results. A tool's result may link to a resource its
// server does not list (the spec allows it: a file the tool just wrote, say),
// and an agent follows the link with resources/read. A URI the catalog does
// not know went to the one upstream that offers resources; with several, it
// was refused (found trying the gateway from outside: server-everything's
// links failed 4 times in 6). The gateway remembers which upstream's result
// linked each such URI, a bounded number of them, and sends the read there.

// maxLinks bounds the URIs remembered; the oldest goes first. maxLinkURI
// bounds the length of one (longer ones are not remembered).
const (
	maxLinks   = 4096
	maxLinkURI = 2 << 10
)

// linkIndex maps linked URIs to the upstream whose result linked them.
type linkIndex struct {
	mu    sync.Mutex
	up    map[string]string
	order [maxLinks]string // a ring of the URIs, oldest at next once full
	next  int
}

// note remembers that upstream up linked uri.
func (l *linkIndex) note(uri, up string) {
	if uri == "" || len(uri) > maxLinkURI {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.up == nil {
		l.up = map[string]string{}
	}
	if _, known := l.up[uri]; !known {
		if old := l.order[l.next]; old != "" {
			delete(l.up, old)
		}
		l.order[l.next] = uri
		l.next = (l.next + 1) % maxLinks
	}
	l.up[uri] = up
}

// owner returns the upstream that last linked uri, or "".
func (l *linkIndex) owner(uri string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.up[uri]
}

// noteLinks remembers the resource links, and the embedded resources, of
// upstream u's result res whose URIs the catalog does not know.
func (g *Server) noteLinks(u *upstream, res *mcp.CallToolResult) {
	for _, c := range res.Content {
		var uri string
		switch c := c.(type) {
		case *mcp.ResourceLink:
			uri = c.URI
		case *mcp.EmbeddedResource:
			if c.Resource != nil {
				uri = c.Resource.URI
			}
		default:
			continue
		}
		if _, _, known := g.catalog.resourceTarget(uri); !known {
			g.links.note(uri, u.name)
		}
	}
}
