package livetail

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe/messages"
)

// TestBlockReadErrors: a block whose reads fail (a disk error, a damaged
// page) makes Get and Scan fail with that error, on the one-block path and
// in a merge with the tail; it never reads as a missing record. The tail's
// own upkeep (a seal dropping staged records, a late append) keeps records
// when the block cannot answer.
func TestBlockReadErrors(t *testing.T) {
	errDisk := errors.New("disk on fire")
	tl := newTestTail(t)
	b := newBlock(line{}, []messages.Record{put(2, "a", 1), put(3, "b", 5), put(4, "c", 9)})
	b.fail, b.failAfter = errDisk, 1
	require.NoError(t, tl.AddBlock(sp1, b))
	v := tl.Publish()

	_, err := v.Get(sp1, messages.Point{5})
	assert.ErrorIs(t, err, errDisk, "Get from the block")
	_, err = v.Get(sp1, messages.Point{6})
	assert.ErrorIs(t, err, ErrNotFound, "a key the filter rules out reads nothing")

	var got []messages.Record
	err = v.Scan(sp1, box1(0, 100), func(r messages.Record) bool { got = append(got, r); return true })
	assert.ErrorIs(t, err, errDisk, "Scan of the block alone")
	assert.LessOrEqual(t, len(got), 1, "what came before the failure, at most")

	// With tail records in the range, the merge path.
	require.NoError(t, tl.Append(sp1, 1, put(10, "t", 2), put(11, "u", 50)))
	v = tl.Publish()
	err = v.Scan(sp1, box1(0, 100), func(messages.Record) bool { return true })
	assert.ErrorIs(t, err, errDisk, "Scan merging the tail and the block")
	r, err := v.Get(sp1, messages.Point{50})
	require.NoError(t, err, "a tail record newer than every block needs no block read")
	assert.Equal(t, messages.Revision(11), r.Revision)

	// A seal whose block cannot answer keeps the staged records it cannot
	// rule out.
	require.NoError(t, tl.Append(sp1, StagedGeneration, put(1, "staged", 7)))
	sb := newBlock(line{}, []messages.Record{put(1, "staged", 7)})
	sb.fail = errDisk
	require.NoError(t, tl.Seal(sp1, 2, sb))
	n, err := tl.Publish().TailLen(sp1)
	require.NoError(t, err)
	assert.Equal(t, 3, n, "the staged record stays in the tail")
}
