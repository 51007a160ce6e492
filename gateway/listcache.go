package gateway

import (
	"encoding/json"
	"hash/maphash"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// A tools/list page is the same bytes for every agent that sees the same
// tools on it: the gateway's tools do not change between catalog rebuilds,
// and a rebuild registers a changed tool as a new *mcp.Tool. Encoding 1,000
// tools with their schemas was a third of what a tools/list walk of 5,000
// tools cost the gateway (issue 12: under 20 ms), so a page's encoding is
// kept, keyed by the very tools on it (their pointers, held by the entry,
// so no other tool can take one's address while it is kept) and its
// cursor, and used again while those are what the page holds.
//
// Only the pages of agents older than 2026-07-28 are kept: for those the
// SDK encodes the result as the middlewares return it; for newer ones it
// annotates the result (resultType, serverInfo) after them.

// Bounds of the page cache: at most listCachePages pages and
// listCacheBytes of encoded pages; a larger page is encoded each time.
const (
	listCachePages = 64
	listCacheBytes = 16 << 20
)

type listCache struct {
	seed  maphash.Seed
	mu    sync.Mutex
	pages *lru[uint64, *listPage]
	bytes int
	// hits counts the pages served from the cache (for tests).
	hits atomic.Int64
	// gen counts the catalog's rebuilds (reset): a page encoded across one
	// is not kept.
	gen atomic.Uint64
}

// reset drops every page: the catalog changed, and the pages would keep
// the tools it no longer lists alive until newer pages pushed them out.
func (c *listCache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen.Add(1)
	c.pages = newLRU[uint64, *listPage](listCachePages)
	c.bytes = 0
}

// listPage is one page's encoding (without the cache hints) and what it
// was encoded from.
type listPage struct {
	tools  []*mcp.Tool
	cursor string
	data   []byte
}

func newListCache() *listCache {
	return &listCache{seed: maphash.MakeSeed(), pages: newLRU[uint64, *listPage](listCachePages)}
}

// cacheable reports whether r's encoding depends only on its tools and
// cursor.
func cacheable(r *mcp.ListToolsResult) bool {
	return len(r.Meta) == 0 && r.ResultType == ""
}

func (c *listCache) key(r *mcp.ListToolsResult) uint64 {
	var h maphash.Hash
	h.SetSeed(c.seed)
	for _, t := range r.Tools {
		p := uintptr(unsafe.Pointer(t))
		h.Write(unsafe.Slice((*byte)(unsafe.Pointer(&p)), unsafe.Sizeof(p)))
	}
	h.WriteString(r.NextCursor)
	return h.Sum64()
}

// encoding returns r's encoding without the cache hints, from the cache
// or made by encode and kept.
func (c *listCache) encoding(r *mcp.ListToolsResult, encode func() ([]byte, error)) ([]byte, error) {
	k, gen := c.key(r), c.gen.Load()
	c.mu.Lock()
	p, ok := c.pages.get(k)
	c.mu.Unlock()
	if ok && p.cursor == r.NextCursor && slices.Equal(p.tools, r.Tools) {
		c.hits.Add(1)
		return p.data, nil
	}
	data, err := encode()
	if err != nil || len(data) > listCacheBytes/4 {
		return data, err
	}
	p = &listPage{tools: slices.Clone(r.Tools), cursor: r.NextCursor, data: data}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen.Load() != gen {
		return data, nil // the catalog changed meanwhile
	}
	for _, old := range c.pages.add(k, p) {
		c.bytes -= len(old.data)
	}
	c.bytes += len(data)
	for c.bytes > listCacheBytes {
		old, ok := c.pages.removeOldest()
		if !ok {
			break
		}
		c.bytes -= len(old.data)
	}
	return data, nil
}

// cachedTools is a tools/list result for an agent older than 2026-07-28
// whose encoding comes from the cache.
type cachedTools struct {
	*mcp.ListToolsResult
	cache *listCache
}

func (r cachedTools) MarshalJSON() ([]byte, error) {
	encode := withoutCacheHints{r.ListToolsResult}.MarshalJSON
	if !cacheable(r.ListToolsResult) {
		return encode() // annotated after the middlewares after all
	}
	return r.cache.encoding(r.ListToolsResult, encode)
}

var _ json.Marshaler = cachedTools{}
