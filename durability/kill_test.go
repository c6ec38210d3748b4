package durability

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ringpipe/ringpipe"
)

// Suite 6 of issue 5: kill -9 with the real backend. A child process (this
// test binary again, TestKillChild in kill_child_test.go) runs an engine on
// a real directory with the io_uring backend (the std backend in a second
// variant) and 16 writers, and reports each write on a pipe: "submitted"
// before the call, "acked rev R" after it returned. The parent SIGKILLs it
// at a moment counted in acknowledgements it has read, reopens the
// directory in-process and checks the Oracle; the next round starts a new
// child on the same directory, so recovered directories are recovered
// again.
//
// A kill is a process crash, not a power loss: the page cache survives, so
// data written but not yet fsynced may survive too. The Oracle allows that
// only for maybe writes, which is exactly what a kill must keep to.

// The report protocol: one line per event, a letter and space-separated
// fields.
const (
	killStarting  = 'R' // about to call Start (recovery)
	killUp        = 'U' // <ns>: Start returned after ns
	killSpace     = 'P' // <i> <id>: killSpecs[i] is space id
	killWriting   = 'W' // the writers start
	killSubmitted = 'S' // <writer> <seq> <space> <point> <delete> <size> <tag>: about to call
	killAcked     = 'A' // <writer> <seq> <rev>: the call returned nil
	killFailed    = 'E' // <writer> <seq> <quoted error>: the call returned an error
	killNotQueued = 'N' // <writer> <seq>: PutAsync returned an error, nothing queued
	killFlushed   = 'F' // a Flush returned nil
	killDone      = 'D' // the child ran out of work and stopped cleanly
	killFatal     = 'X' // <quoted error>: the child could not go on
)

// killPlan is how many kills a run makes per backend and how often it
// starts over on a fresh directory.
type killPlan struct {
	kills    int // per backend
	freshDir int // rounds on one directory
	deadline time.Time
}

// killPlanFor is 25 kills per backend in CI (50 in all: about 50 s with
// -race on 2 quiet cores, twice that on a busy machine), on chains of 13
// and 12 rounds per directory; 2,000 per backend under RINGPIPE_SOAK=1
// (each backend bounded by RINGPIPE_SOAK_DURATION when set), on chains of
// 200. Blocks
// are never merged yet, so every byte written stays and recovery slows as
// a directory grows: longer chains would measure recovery time, not
// durability.
func killPlanFor(t *testing.T) killPlan {
	if soak() {
		return killPlan{kills: 2000, freshDir: 200, deadline: soakDeadline(t)}
	}
	return killPlan{kills: 25, freshDir: 13}
}

// killRoundTimeout bounds one round (a child's start, its writes up to the
// kill, the parent's recovery and check); a round under -race takes about
// a second.
const killRoundTimeout = 2 * time.Minute

// killMaxTarget is the most acknowledgements a child gets before its kill:
// targets are uniform in [0, killMaxTarget], so kills fall anywhere from
// the first batch to past a seal.
const killMaxTarget = 1500

// killAtStartOneIn: one round in this many kills the child while it
// starts (recovery of a directory a kill left, or of one the parent
// stopped cleanly) instead of while it writes.
const killAtStartOneIn = 8

// killFigures are what suite 6 prints.
type killFigures struct {
	Figures                 // the Oracle's
	Kills            int    // children killed by SIGKILL
	KillsAtStart     int    // of which while starting
	Submitted        int    // writes reported submitted
	AckedSeen        int    // writes reported acknowledged
	InFlight         int    // writes submitted and not answered at a kill
	FailedSeen       int    // writes whose call returned an error
	Flushes          int    // Flush calls that returned
	RecoveryFailures int    // the parent's Start (recovery) failed
	ChildFailures    int    // a child failed, died of something else or broke the protocol
	Seed             int64  // replay with -seed
	Backend          string // uring or std

	childStart, recovery time.Duration // summed: a child's Start, the parent's
}

func (f killFigures) String() string {
	return fmt.Sprintf("kill -9 (%s, seed %d): kills %d (%d while starting), writes submitted %d, acked %d, "+
		"in flight at a kill %d (found present %d, absent %d), failed %d, flushes %d; "+
		"acked lost %d, duplicated %d, half-applied %d, phantom %d, revision errors %d, read errors %d, "+
		"scan mismatches %d, recovery failures %d, child failures %d; mean recovery: child %v, parent %v",
		f.Backend, f.Seed, f.Kills, f.KillsAtStart, f.Submitted, f.AckedSeen, f.InFlight, f.MaybePresent,
		f.MaybeAbsent, f.FailedSeen, f.Flushes, f.AckedLost, f.Duplicated, f.HalfApplied, f.Phantom,
		f.RevisionErrors, f.ReadErrors, f.ScanMismatches, f.RecoveryFailures, f.ChildFailures,
		(f.childStart / time.Duration(max(1, f.Kills))).Round(time.Millisecond),
		(f.recovery / time.Duration(max(1, f.Kills))).Round(time.Millisecond))
}

// TestKill is suite 6: SIGKILL a child writing under load, recover, check.
// -seed replays a run's choices (workloads and kill targets), not the
// kernel's timing.
func TestKill(t *testing.T) {
	for i, b := range []ringpipe.Backend{ringpipe.BackendURing, ringpipe.BackendStd} {
		t.Run(b.String(), func(t *testing.T) {
			leakSkipWithout(t, b)
			plan := killPlanFor(t)
			seed := int64(6001 + i)
			if *seedFlag != 0 {
				seed = *seedFlag
			}
			k := newKiller(t, b, seed, "")
			began := time.Now()
			var err error
			for round := 0; round < plan.kills && err == nil; round++ {
				if !plan.deadline.IsZero() && time.Now().After(plan.deadline) {
					break
				}
				if round > 0 && round%plan.freshDir == 0 {
					k.fresh(t)
				}
				err = k.round(round)
			}
			t.Logf("%v; %v in all", k.fig, time.Since(began).Round(time.Millisecond))
			if err != nil {
				t.Fatalf("%v\nreplay with: go test -run 'TestKill$/%s' ./durability -seed %d", err, b, seed)
			}
			assert.Zero(t, k.fig.Violations(), "violations")
			assert.Zero(t, k.fig.RecoveryFailures, "recovery failures")
			assert.Zero(t, k.fig.ChildFailures, "child failures")
			if !soak() {
				assert.Equal(t, plan.kills, k.fig.Kills, "kills")
				// Kills fell while writing and while starting.
				assert.Positive(t, k.fig.KillsAtStart, "kills while starting")
				assert.Greater(t, k.fig.Kills, k.fig.KillsAtStart+plan.kills/2, "kills while writing")
				assert.Positive(t, k.fig.InFlight, "writes in flight at a kill")
			}
		})
	}
}

// TestKillCatchesLies checks the harness itself: a child that reports
// some Puts acknowledged without making them (killLieEnv) must be caught
// as losing acknowledged writes, through the same pipe, parser and Oracle
// as the real suite.
func TestKillCatchesLies(t *testing.T) {
	k := newKiller(t, ringpipe.BackendStd, 66, killLieEnv+"=1")
	var err error
	for round := 0; round < 3 && err == nil; round++ {
		err = k.round(round)
	}
	require.Error(t, err, "a child that acknowledges writes it never made passed the check: %v", k.fig)
	assert.Contains(t, err.Error(), "lost")
	assert.Positive(t, k.fig.AckedLost, "acknowledged writes lost")
	t.Logf("caught: %v", k.fig)
}

// TestKillProtocol checks the report protocol's pieces without a child:
// points and values survive the trip, and malformed or inconsistent
// reports are refused.
func TestKillProtocol(t *testing.T) {
	for _, p := range []ringpipe.Point{{0}, {7, 1 << 31}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}} {
		got, err := killParsePoint(killFormatPoint(p))
		require.NoError(t, err)
		assert.Equal(t, p, got)
	}
	_, err := killParsePoint("1,x")
	assert.Error(t, err)

	v := killValue(0x0123456789abcdef, 100)
	assert.Len(t, v, 100)
	assert.Equal(t, uint64(0x0123456789abcdef), killTagOf(v), "the value carries its tag")
	assert.Equal(t, v, killValue(0x0123456789abcdef, 100), "rebuilt from tag and size")
	assert.NotEqual(t, v, killValue(0x0123456789abcdee, 100), "another tag")
	assert.Equal(t, v[:5], killValue(0x0123456789abcdef, 5), "a short value is the tag's head")

	k := newKiller(t, ringpipe.BackendStd, 1)
	c := &killChildProc{writes: map[[2]int]*Write{}}
	require.NoError(t, k.handle(c, "P 0 1"))
	require.NoError(t, k.handle(c, "W"))
	require.NoError(t, k.handle(c, "S 3 1 1 5 false 20 ff"))
	require.NoError(t, k.handle(c, "A 3 1 17"))
	assert.Equal(t, 1, c.acks)
	assert.True(t, c.writing)
	for _, bad := range []string{
		"A 3 1 18",                // answered twice
		"A 4 9 19",                // never submitted
		"S 3 2 9 5 false 20 ff",   // a space no child reported
		"S 3 2 1 5 false 20",      // a field short
		"S 3 2 1 5,x false 20 ff", // a bad point
		"P 0 2",                   // the registry changed
		"E 3 1 \"boom\"",          // an answer to nothing
		"Q",                       // unknown
	} {
		assert.Error(t, k.handle(c, bad), "%q", bad)
	}
	require.NoError(t, k.handle(c, "S 3 2 1 6 true 0 0"))
	assert.Error(t, k.handle(c, "E 3 2 \"boom\""), "a failed write is a failure here")
}

// killer runs the rounds of one backend. It is used by one goroutine.
type killer struct {
	t       *testing.T
	backend ringpipe.Backend
	seed    int64
	rng     *rand.Rand // the kill plan: targets and kinds of kill
	exe     string
	env     []string // extra environment for the children
	dir     string
	oracle  *Oracle
	spaces  map[int]ringpipe.SpaceID  // killSpecs index → id, as children reported
	ids     map[ringpipe.SpaceID]bool // the ids in spaces
	fig     killFigures
	startNS int64 // the last child's Start duration, for kills while starting
}

func newKiller(t *testing.T, b ringpipe.Backend, seed int64, env ...string) *killer {
	exe, err := os.Executable()
	require.NoError(t, err)
	k := &killer{t: t, backend: b, seed: seed, rng: newRand(seed), exe: exe}
	for _, e := range env {
		if e != "" {
			k.env = append(k.env, e)
		}
	}
	k.fig.Seed, k.fig.Backend = seed, b.String()
	k.fresh(t)
	return k
}

// fresh starts over on a new, empty directory.
func (k *killer) fresh(t *testing.T) {
	k.dir = t.TempDir()
	k.oracle = NewOracle()
	k.spaces = map[int]ringpipe.SpaceID{}
	k.ids = map[ringpipe.SpaceID]bool{}
	k.startNS = 0
}

// killChildProc is what the parent knows of one child.
type killChildProc struct {
	cmd     *exec.Cmd
	out     *killTail
	writes  map[[2]int]*Write // (writer, seq) → the write, until its answer
	acks    int               // acknowledgements read
	writing bool              // it reported killWriting
	killed  bool              // SIGKILL sent (or due from the start timer)
	done    bool              // it reported killDone
}

// round runs one child until its kill, then recovers and checks. An error
// is a broken promise (the Oracle's report) or a broken harness.
func (k *killer) round(round int) error {
	atStart := k.rng.Intn(killAtStartOneIn) == 0 && k.startNS > 0
	target := k.rng.Intn(killMaxTarget + 1)
	var startDelay time.Duration
	if atStart {
		startDelay = time.Duration(k.rng.Int63n(k.startNS + 1))
	}
	c, r, err := k.spawn(k.seed*1_000_003 + int64(round))
	if err != nil {
		return err
	}
	defer func() {
		// A failed round leaves no child behind.
		if c.cmd.ProcessState == nil {
			c.cmd.Process.Kill() //nolint:errcheck // it may be gone
			r.Close()            //nolint:errcheck // it may be closed
			c.cmd.Wait()         //nolint:errcheck // failing anyway
		}
	}()
	watchdog := time.AfterFunc(killRoundTimeout, func() { c.cmd.Process.Kill() }) //nolint:errcheck // it may be gone
	defer watchdog.Stop()
	var startTimer *time.Timer
	defer func() {
		if startTimer != nil {
			startTimer.Stop()
		}
	}()

	fail := func(format string, args ...any) error {
		k.fig.ChildFailures++
		return fmt.Errorf("round %d (target %d acks, %d read): %s; the child's output:\n%s",
			round, target, c.acks, fmt.Sprintf(format, args...), c.out.String())
	}
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadString('\n')
		if err == io.EOF {
			if line != "" {
				// Each line is one write(2) of under PIPE_BUF bytes.
				return fail("torn report line %q", line)
			}
			break
		}
		if err != nil {
			return fail("read the reports: %v", err)
		}
		if err := k.handle(c, strings.TrimSuffix(line, "\n")); err != nil {
			c.cmd.Process.Kill() //nolint:errcheck // failing anyway
			return fail("report %q: %v", strings.TrimSpace(line), err)
		}
		switch {
		case c.killed:
		case atStart && line[0] == killStarting:
			// Kill during Start, after a random part of the time the
			// last Start took: a timer, since Start reports no progress.
			c.killed = true
			startTimer = time.AfterFunc(startDelay, func() { c.cmd.Process.Signal(syscall.SIGKILL) }) //nolint:errcheck // it may be gone
		case !atStart && c.writing && c.acks >= target:
			c.killed = true
			if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				return fail("SIGKILL: %v", err)
			}
		}
	}
	if err := r.Close(); err != nil {
		return fail("close the pipe: %v", err)
	}
	werr := c.cmd.Wait()

	// How did the child end?
	ws, _ := c.cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case c.killed && ws.Signaled() && ws.Signal() == syscall.SIGKILL:
		k.fig.Kills++
		if !c.writing {
			k.fig.KillsAtStart++
		}
	case c.done && werr == nil:
		// It ran out of work before its kill and stopped cleanly: still
		// checked, not counted.
		k.t.Logf("round %d: the child finished before its kill", round)
	default:
		return fail("the child ended by itself: %v", werr)
	}
	if out := c.out.String(); strings.Contains(out, "WARNING: DATA RACE") || strings.Contains(out, "panic:") {
		return fail("the child raced or panicked")
	}
	k.fig.InFlight += len(c.writes) // still maybe: no answer came

	return k.recoverAndCheck(round)
}

// spawn starts a child on k.dir and returns it with the read end of its
// report pipe.
func (k *killer) spawn(seed int64) (*killChildProc, *os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(k.exe, "-test.run=^TestKillChild$", "-test.count=1", "-test.timeout=10m")
	cmd.Env = append(os.Environ(),
		killChildEnv+"=1",
		killDirEnv+"="+k.dir,
		killBackendEnv+"="+k.backend.String(),
		killSeedEnv+"="+strconv.FormatInt(seed, 10),
	)
	cmd.Env = append(cmd.Env, k.env...)
	cmd.ExtraFiles = []*os.File{w}
	out := &killTail{max: 256 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Start()
	// Only the child holds the write end now: EOF comes when it dies.
	w.Close() //nolint:errcheck // a pipe's write end
	if err != nil {
		r.Close() //nolint:errcheck // unused
		return nil, nil, fmt.Errorf("start a child: %w", err)
	}
	return &killChildProc{cmd: cmd, out: out, writes: map[[2]int]*Write{}}, r, nil
}

// handle applies one report line to the Oracle and the figures.
func (k *killer) handle(c *killChildProc, line string) error {
	f := strings.Fields(line)
	if len(f) == 0 {
		return errors.New("empty")
	}
	ints := func(n int) ([]int64, error) {
		if len(f) < n+1 {
			return nil, fmt.Errorf("want %d fields", n)
		}
		out := make([]int64, n)
		for i := range out {
			v, err := strconv.ParseInt(f[i+1], 10, 64)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	}
	take := func(w, seq int64) (*Write, error) {
		key := [2]int{int(w), int(seq)}
		wr := c.writes[key]
		if wr == nil {
			return nil, errors.New("an answer to a write never submitted")
		}
		delete(c.writes, key)
		return wr, nil
	}
	switch line[0] {
	case killStarting:
		return nil
	case killDone:
		c.done = true
		return nil
	case killFatal:
		return fmt.Errorf("the child failed: %s", strings.TrimPrefix(line, string(killFatal)+" "))
	case killWriting:
		c.writing = true
		return nil
	case killFlushed:
		k.fig.Flushes++
		return nil
	case killSubmitted:
		return k.submitted(c, f)
	case killUp:
		v, err := ints(1)
		if err != nil {
			return err
		}
		k.startNS = v[0]
		k.fig.childStart += time.Duration(v[0])
		return nil
	}
	v, err := ints(2)
	if err != nil {
		return err
	}
	switch line[0] {
	case killSpace:
		i, id := int(v[0]), ringpipe.SpaceID(v[1])
		if i < 0 || i >= len(killSpecs) {
			return fmt.Errorf("no space %d", i)
		}
		if old, ok := k.spaces[i]; ok && old != id {
			return fmt.Errorf("space %q was %d before: the registry changed", killSpecs[i].Name, old)
		}
		k.spaces[i] = id
		k.ids[id] = true
		k.oracle.AddSpace(id, killSpecs[i])
	case killAcked:
		if v, err = ints(3); err != nil {
			return err
		}
		wr, err := take(v[0], v[1])
		if err != nil {
			return err
		}
		k.oracle.Ack(wr, ringpipe.Revision(v[2]))
		c.acks++
		k.fig.AckedSeen++
	case killFailed:
		wr, err := take(v[0], v[1])
		if err != nil {
			return err
		}
		msg := strings.Join(f[3:], " ")
		k.oracle.Fail(wr, errors.New(msg))
		k.fig.FailedSeen++
		// Nothing fails a write here but a bug: no faults, no Stop.
		return fmt.Errorf("a write failed before the kill: %s", msg)
	case killNotQueued:
		wr, err := take(v[0], v[1])
		if err != nil {
			return err
		}
		k.oracle.NotSubmitted(wr, errors.New("not queued"))
		return errors.New("a PutAsync failed before the kill")
	default:
		return errors.New("unknown report")
	}
	return nil
}

// submitted handles killSubmitted: the write goes to the Oracle as maybe.
func (k *killer) submitted(c *killChildProc, f []string) error {
	if len(f) != 8 {
		return errors.New("want 8 fields")
	}
	var nums [4]int64
	for i, s := range []string{f[1], f[2], f[3], f[6]} {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return err
		}
		nums[i] = v
	}
	p, err := killParsePoint(f[4])
	if err != nil {
		return err
	}
	del, err := strconv.ParseBool(f[5])
	if err != nil {
		return err
	}
	tag, err := strconv.ParseUint(f[7], 16, 64)
	if err != nil {
		return err
	}
	id := ringpipe.SpaceID(nums[2])
	if !k.ids[id] {
		return fmt.Errorf("a write to space %d, which no child reported", id)
	}
	var val []byte
	if !del {
		val = killValue(tag, int(nums[3]))
	}
	key := [2]int{int(nums[0]), int(nums[1])}
	if c.writes[key] != nil {
		return errors.New("submitted twice")
	}
	c.writes[key] = k.oracle.Begin(id, p, val, del)
	k.fig.Submitted++
	return nil
}

// recoverAndCheck reopens the directory in-process and checks the Oracle.
func (k *killer) recoverAndCheck(round int) (err error) {
	ctx, cancel := context.WithTimeout(context.Background(), killRoundTimeout)
	defer cancel()
	began := time.Now()
	e, err := ringpipe.Start(ctx, killConfig(k.dir, k.backend))
	if err != nil {
		k.fig.RecoveryFailures++
		return fmt.Errorf("round %d: recovery: %w", round, err)
	}
	k.fig.recovery += time.Since(began)
	defer func() {
		if serr := leakStop(ctx, e, fmt.Sprintf("after the check of round %d", round)); serr != nil && err == nil {
			err = fmt.Errorf("round %d: Stop after the check: %w", round, serr)
		}
	}()
	rep := k.oracle.Check(ctx, e)
	k.fig.Figures.Add(rep.Figures)
	if err := rep.Err(); err != nil {
		return fmt.Errorf("round %d: %w", round, err)
	}
	return nil
}

// killTail keeps the last max bytes written to it: a child's output,
// shown when it fails.
type killTail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (b *killTail) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b = append(b.b, p...)
	if len(b.b) > b.max {
		b.b = append(b.b[:0], b.b[len(b.b)-b.max:]...)
	}
	return len(p), nil
}

func (b *killTail) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.b)
}
