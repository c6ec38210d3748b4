package wal

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestWriteFuzzCorpus rewrites the checked-in seed corpus of FuzzScanFrames
// (testdata/fuzz/FuzzScanFrames/seed-*) for the current frame format. It
// runs only with RINGPIPE_WRITE_CORPUS=1; the seeds themselves run as
// plain tests every time.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("RINGPIPE_WRITE_CORPUS") != "1" {
		t.Skip("set RINGPIPE_WRITE_CORPUS=1 to rewrite the seed corpus")
	}
	log, starts := buildLog([]int{1, 3, 2}, 64)
	mid := append([]byte(nil), log...)
	mid[starts[1]+FrameHeader+2] ^= 4
	torn := append([]byte(nil), log...)
	clear(torn[starts[2]+FrameHeader : starts[3]])
	base := oldLives(4096)
	imgs, rs := life(base, 13, []int{2, 1, 3}, 4)
	recycled := imgs[len(imgs)-1]
	rtorn := append([]byte(nil), recycled...)
	copy(rtorn[rs[2]:rs[2]+40], imgs[2][rs[2]+100:rs[2]+140])
	rmid := append([]byte(nil), recycled...)
	clear(rmid[rs[1] : rs[1]+FrameHeader])
	seeds := map[string]struct {
		data []byte
		m    uint8
	}{
		"seed-clean":             {log, 0},
		"seed-clean-strict":      {log, 1},
		"seed-cut":               {log[:len(log)-100], 0},
		"seed-mid-corrupt":       {mid, 0},
		"seed-single":            {AppendFrame(nil, 1, []byte("x")), 1},
		"seed-torn":              {torn, 0},
		"seed-recycled-empty":    {base, 3},
		"seed-recycled":          {recycled, 3},
		"seed-recycled-torn":     {rtorn, 2},
		"seed-recycled-mid":      {rmid, 2},
		"seed-recycled-as-zeros": {recycled, 0},
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzScanFrames")
	for name, s := range seeds {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nuint8(%d)\n", s.data, s.m)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
	}
}
