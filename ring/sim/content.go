package sim

// pageSize is the unit in which file contents are stored and copied at a
// sync: small enough that a sync copies only what changed, large enough that
// a many-megabyte file is a few thousand map entries. It is also the unit in
// which Linux writes back dirty page cache.
const pageSize = 4096

// SectorSize is the unit a power loss applies, drops or tears: a disk
// writes a 512-byte sector whole or not at all, but sectors of one write may
// land in any combination.
const SectorSize = 512

// page is one page of file data.
type page [pageSize]byte

// content is a sparse byte array: size bytes, of which only the pages
// present in the map are stored; every byte of a missing page reads as zero.
// A 64 MiB fallocate therefore costs only a new size.
//
// Invariant: no page lies wholly at or beyond size, and the bytes of the last
// partial page past size are zero (truncate keeps both).
type content struct {
	size  int64
	pages map[int64]*page
}

func newContent() content { return content{pages: make(map[int64]*page)} }

// dataEnd is OpDataEnd: the end of the last page ever written below size
// (a page never written reads as zeros, as a hole or an unwritten extent
// does on Linux).
func (c *content) dataEnd() int64 {
	end := int64(0)
	for idx := range c.pages {
		end = max(end, (idx+1)*pageSize)
	}
	return min(end, c.size)
}

// readAt copies the bytes at [off, off+len(b)) that lie below size into b
// and returns how many it copied.
func (c *content) readAt(b []byte, off int64) int {
	if off >= c.size {
		return 0
	}
	if rest := c.size - off; int64(len(b)) > rest {
		b = b[:rest]
	}
	n := 0
	for n < len(b) {
		pos := off + int64(n)
		idx, in := pos/pageSize, int(pos%pageSize)
		chunk := b[n:]
		if len(chunk) > pageSize-in {
			chunk = chunk[:pageSize-in]
		}
		if p := c.pages[idx]; p != nil {
			copy(chunk, p[in:])
		} else {
			clear(chunk)
		}
		n += len(chunk)
	}
	return n
}

// writeAt stores b at off, extending size, and adds every touched page to
// dirty (which may be nil).
func (c *content) writeAt(b []byte, off int64, dirty map[int64]struct{}) {
	for n := 0; n < len(b); {
		pos := off + int64(n)
		idx, in := pos/pageSize, int(pos%pageSize)
		p := c.pages[idx]
		if p == nil {
			p = new(page)
			c.pages[idx] = p
		}
		n += copy(p[in:], b[n:])
		if dirty != nil {
			dirty[idx] = struct{}{}
		}
	}
	if end := off + int64(len(b)); end > c.size {
		c.size = end
	}
}

// setSize truncates or extends to n; an extension reads as zeros. Pages
// dropped or changed are added to dirty (which may be nil).
func (c *content) setSize(n int64, dirty map[int64]struct{}) {
	if n >= c.size {
		c.size = n
		return
	}
	for idx := range c.pages {
		if idx*pageSize >= n {
			delete(c.pages, idx)
			if dirty != nil {
				dirty[idx] = struct{}{}
			}
		}
	}
	if in := n % pageSize; in != 0 {
		if p := c.pages[n/pageSize]; p != nil {
			clear(p[in:])
			if dirty != nil {
				dirty[n/pageSize] = struct{}{}
			}
		}
	}
	c.size = n
}

// clone returns a deep copy.
func (c *content) clone() content {
	out := content{size: c.size, pages: make(map[int64]*page, len(c.pages))}
	for idx, p := range c.pages {
		cp := *p
		out.pages[idx] = &cp
	}
	return out
}

// bytes returns the whole content as one slice.
func (c *content) bytes() []byte {
	b := make([]byte, c.size)
	c.readAt(b, 0)
	return b
}
