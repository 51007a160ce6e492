package gateway

import (
	"encoding/json"
	"hash/maphash"
	"slices"
	"strconv"
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
// The SDK annotates a 2026-07-28 agent's result (resultType, serverInfo)
// after the middlewares: such a page is kept as annotated, and used again
// only for a result annotated the same way. An older agent's page is
// kept without the cache hints (withoutCacheHints).

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

// listPage is one page's encoding and what it was encoded from.
type listPage struct {
	tools  []*mcp.Tool
	cursor string
	form   pageForm
	data   []byte
}

// pageForm is what a page's encoding depends on besides its tools and
// cursor: for a 2026-07-28 agent its annotation and cache hints; zero for
// an older agent's page, which has neither.
type pageForm struct {
	current    bool // 2026-07-28
	resultType string
	ttlMs      int
	cacheScope string
}

func newListCache() *listCache {
	return &listCache{seed: maphash.MakeSeed(), pages: newLRU[uint64, *listPage](listCachePages)}
}

// cacheable reports whether r's encoding depends only on its tools and
// cursor (an older agent's page, not annotated).
func cacheable(r *mcp.ListToolsResult) bool {
	return len(r.Meta) == 0 && r.ResultType == ""
}

// annotatedOnly reports whether r's _meta holds nothing but the serverInfo
// the SDK puts there, impl (a 2026-07-28 agent's page).
func annotatedOnly(r *mcp.ListToolsResult, impl *mcp.Implementation) bool {
	if len(r.Meta) != 1 {
		return false
	}
	v, ok := r.Meta[mcp.MetaKeyServerInfo].(*mcp.Implementation)
	return ok && v == impl
}

func (c *listCache) key(r *mcp.ListToolsResult, form pageForm) uint64 {
	var h maphash.Hash
	h.SetSeed(c.seed)
	for _, t := range r.Tools {
		p := uintptr(unsafe.Pointer(t))
		h.Write(unsafe.Slice((*byte)(unsafe.Pointer(&p)), unsafe.Sizeof(p)))
	}
	h.WriteString(r.NextCursor)
	if form.current {
		h.WriteString("\x00" + form.resultType + "\x00" + form.cacheScope + "\x00" + strconv.Itoa(form.ttlMs))
	}
	return h.Sum64()
}

// encoding returns r's encoding in form, from the cache or made by encode
// and kept.
func (c *listCache) encoding(r *mcp.ListToolsResult, form pageForm, encode func() ([]byte, error)) ([]byte, error) {
	k, gen := c.key(r, form), c.gen.Load()
	c.mu.Lock()
	p, ok := c.pages.get(k)
	c.mu.Unlock()
	if ok && p.cursor == r.NextCursor && p.form == form && slices.Equal(p.tools, r.Tools) {
		c.hits.Add(1)
		return p.data, nil
	}
	data, err := encode()
	if err != nil || len(data) > listCacheBytes/4 {
		return data, err
	}
	p = &listPage{tools: slices.Clone(r.Tools), cursor: r.NextCursor, form: form, data: data}
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

// cachedTools is a tools/list result whose encoding comes from the cache.
// Embedding the SDK's result keeps it one the SDK annotates (resultType,
// serverInfo) for a 2026-07-28 agent.
type cachedTools struct {
	*mcp.ListToolsResult
	cache *listCache
	// current is the downstream server's identity for a 2026-07-28
	// agent's page, whose cache hints are kept; nil for an older agent's.
	current *mcp.Implementation
}

func (r cachedTools) MarshalJSON() ([]byte, error) {
	lr := r.ListToolsResult
	if r.current != nil {
		encode := func() ([]byte, error) { return marshalAsSDK(lr) }
		if !annotatedOnly(lr, r.current) {
			return encode()
		}
		return r.cache.encoding(lr, pageForm{current: true, resultType: string(lr.ResultType), ttlMs: lr.TTLMs, cacheScope: lr.CacheScope}, encode)
	}
	encode := withoutCacheHints{lr}.MarshalJSON
	if !cacheable(lr) {
		return encode() // annotated after the middlewares after all
	}
	return r.cache.encoding(lr, pageForm{}, encode)
}

var _ json.Marshaler = cachedTools{}
