package baseline

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// TestMain checks that Close stops GroupLog's flusher.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testPrealloc is small: the tests write a few KiB, and appends past the
// preallocation must work too.
const testPrealloc = 4096

// waitTimeout bounds every wait in these tests.
const waitTimeout = 30 * time.Second

// logs runs test on each baseline, with a fresh log file.
func logs(t *testing.T, test func(t *testing.T, l Log, path string)) {
	for _, c := range []struct {
		name string
		open func(string, int64) (Log, error)
	}{
		{"GroupLog", func(p string, n int64) (Log, error) { return OpenGroupLog(p, n) }},
		{"SyncLoop", func(p string, n int64) (Log, error) { return OpenSyncLoop(p, n) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log")
			l, err := c.open(path, testPrealloc)
			require.NoError(t, err)
			t.Cleanup(func() { l.Close() })
			test(t, l, path)
		})
	}
}

// readRecords returns the log's records as strings.
func readRecords(t *testing.T, path string) []string {
	t.Helper()
	recs, err := Records(path)
	require.NoError(t, err)
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = string(r)
	}
	return out
}

// waitAll waits for wg, failing the test after waitTimeout.
func waitAll(t *testing.T, wg *sync.WaitGroup) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("appenders still blocked after", waitTimeout)
	}
}

func TestAppendReadableOnReturn(t *testing.T) {
	logs(t, func(t *testing.T, l Log, path string) {
		var want []string
		for i, rec := range []string{"first", "", "third", string(make([]byte, 3*testPrealloc))} {
			require.NoError(t, l.Append([]byte(rec)), "record %d", i)
			want = append(want, rec)
			// Read from the file, not through the log, before Close.
			assert.Equal(t, want, readRecords(t, path), "after record %d", i)
		}
	})
}

func TestAppendCopiesRecord(t *testing.T) {
	logs(t, func(t *testing.T, l Log, path string) {
		rec := []byte("original")
		require.NoError(t, l.Append(rec))
		copy(rec, "CHANGED!")
		require.NoError(t, l.Close())
		assert.Equal(t, []string{"original"}, readRecords(t, path))
	})
}

func TestConcurrentAppenders(t *testing.T) {
	const writers, each = 32, 40
	logs(t, func(t *testing.T, l Log, path string) {
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					if err := l.Append(fmt.Appendf(nil, "w%02d-%04d", w, i)); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		waitAll(t, &wg)
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}

		// Every record once, and each writer's records in its order (an
		// Append returns before the writer's next one starts).
		recs := readRecords(t, path)
		require.Len(t, recs, writers*each)
		next := make([]int, writers)
		for _, r := range recs {
			var w, i int
			_, err := fmt.Sscanf(r, "w%02d-%04d", &w, &i)
			require.NoError(t, err, "record %q", r)
			require.Equal(t, next[w], i, "writer %d out of order", w)
			next[w]++
		}
		require.NoError(t, l.Close())
	})
}

func TestCloseIdempotent(t *testing.T) {
	logs(t, func(t *testing.T, l Log, path string) {
		require.NoError(t, l.Append([]byte("kept")))
		require.NoError(t, l.Close())
		assert.NoError(t, l.Close())
		assert.ErrorIs(t, l.Append([]byte("late")), ErrClosed)
		assert.Equal(t, []string{"kept"}, readRecords(t, path))
	})
}

func TestConcurrentClose(t *testing.T) {
	logs(t, func(t *testing.T, l Log, _ string) {
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Add(1)
			go func() { defer wg.Done(); errs <- l.Close() }()
		}
		waitAll(t, &wg)
		close(errs)
		nils := 0
		for err := range errs {
			require.NoError(t, err)
			nils++
		}
		assert.Equal(t, 8, nils)
		assert.ErrorIs(t, l.Append([]byte("late")), ErrClosed)
	})
}

// TestCloseWhileAppending: writers race Close; each Append either succeeds,
// and its record is in the file, or returns ErrClosed; none is left
// waiting.
func TestCloseWhileAppending(t *testing.T) {
	const writers = 16
	logs(t, func(t *testing.T, l Log, path string) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		acked := map[string]bool{}
		started := make(chan struct{}, writers)
		errs := make(chan error, writers)
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					rec := fmt.Sprintf("w%02d-%06d", w, i)
					err := l.Append([]byte(rec))
					if i == 0 {
						started <- struct{}{}
					}
					if errors.Is(err, ErrClosed) {
						return
					}
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					acked[rec] = true
					mu.Unlock()
				}
			}()
		}
		for range writers {
			select {
			case <-started:
			case <-time.After(waitTimeout):
				t.Fatal("writers did not start")
			}
		}
		require.NoError(t, l.Close())
		waitAll(t, &wg)
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}

		inFile := map[string]bool{}
		for _, r := range readRecords(t, path) {
			require.False(t, inFile[r], "record %q twice", r)
			inFile[r] = true
		}
		for rec := range acked {
			assert.True(t, inFile[rec], "acknowledged record %q missing", rec)
		}
		assert.NotEmpty(t, acked)
	})
}

func TestRecordTooLarge(t *testing.T) {
	logs(t, func(t *testing.T, l Log, path string) {
		err := l.Append(make([]byte, MaxRecord+1))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "MaxRecord")
		require.NoError(t, l.Append([]byte("after")))
		assert.Equal(t, []string{"after"}, readRecords(t, path))
	})
}

// TestIOErrorSticky: after a failed write or sync the log refuses every
// later Append with that error, and Close reports it.
func TestIOErrorSticky(t *testing.T) {
	logs(t, func(t *testing.T, l Log, path string) {
		require.NoError(t, l.Append([]byte("good")))
		// Swap the file for an invalid descriptor. The log is idle, and
		// the next Append's lock and kick order this write before any use.
		var realFD int
		switch l := l.(type) {
		case *GroupLog:
			l.mu.Lock()
			realFD, l.fd = l.fd, -1
			l.mu.Unlock()
		case *SyncLoop:
			l.mu.Lock()
			realFD, l.fd = l.fd, -1
			l.mu.Unlock()
		}
		defer unix.Close(realFD)

		err := l.Append([]byte("bad"))
		require.ErrorIs(t, err, unix.EBADF)
		assert.ErrorIs(t, l.Append([]byte("later")), unix.EBADF)
		assert.ErrorIs(t, l.Close(), unix.EBADF)
		assert.Equal(t, []string{"good"}, readRecords(t, path))
	})
}

func TestRecordsRefusesDamage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	l, err := OpenSyncLoop(path, testPrealloc)
	require.NoError(t, err)
	require.NoError(t, l.Append([]byte("one")))
	require.NoError(t, l.Append([]byte("two")))
	require.NoError(t, l.Close())

	data, err := os.ReadFile(path)
	require.NoError(t, err)
	second := headerSize + len("one")
	data[second+headerSize] ^= 1 // a payload byte of "two"
	require.NoError(t, os.WriteFile(path, data, 0o644))

	recs, err := Records(path)
	require.Error(t, err)
	assert.Contains(t, err.Error(), fmt.Sprintf("offset %d", second))
	assert.Len(t, recs, 1)
}
