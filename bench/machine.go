package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// machine describes where a run happened.
type machine struct {
	CPU        string `json:"cpu"`
	Cores      int    `json:"cores"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	Kernel     string `json:"kernel"`
	Go         string `json:"go"`
	// Dir is the parent of the cells' temporary directories; FS, Device
	// and Mount are the filesystem it lives on.
	Dir    string `json:"dir"`
	FS     string `json:"fs"`
	Device string `json:"device"`
	Mount  string `json:"mount"`
	// Load is /proc/loadavg's 1-minute load and IOPressure the share of
	// the last 60 s in which some task waited for I/O (/proc/pressure/io),
	// at the run's start and end: other work on the machine skews a run.
	Load       [2]float64 `json:"load"`
	IOPressure [2]float64 `json:"io_pressure"`
}

func (m machine) String() string {
	return fmt.Sprintf("%s, %d cores (GOMAXPROCS %d), Linux %s, %s; files in %s: %s on %s (mounted at %s); load average %.1f at the start, %.1f at the end; I/O pressure (some, avg60) %.0f%% and %.0f%%",
		m.CPU, m.Cores, m.GOMAXPROCS, m.Kernel, m.Go, m.Dir, m.FS, m.Device, m.Mount, m.Load[0], m.Load[1], m.IOPressure[0], m.IOPressure[1])
}

// sampleLoad records the machine's load into slot i (0: start, 1: end).
func (m *machine) sampleLoad(i int) {
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			m.Load[i], _ = strconv.ParseFloat(f[0], 64)
		}
	}
	if b, err := os.ReadFile("/proc/pressure/io"); err == nil {
		m.IOPressure[i] = ioPressure(b)
	}
}

// ioPressure returns avg60 of the "some" line of /proc/pressure/io.
func ioPressure(b []byte) float64 {
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "some" {
			continue
		}
		for _, kv := range f[1:] {
			if v, ok := strings.CutPrefix(kv, "avg60="); ok {
				p, _ := strconv.ParseFloat(v, 64)
				return p
			}
		}
	}
	return 0
}

func describeMachine(dir string) machine {
	m := machine{
		CPU:        "unknown CPU",
		Cores:      runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		Kernel:     "unknown",
		Go:         runtime.Version(),
		Dir:        dir,
		FS:         "unknown",
		Device:     "unknown",
		Mount:      "unknown",
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if abs, err := filepath.Abs(dir); err == nil {
		if real, err := filepath.EvalSymlinks(abs); err == nil {
			abs = real
		}
		m.Dir = abs
		if mi, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
			m.Mount, m.FS, m.Device = mountOf(mi, abs)
		}
	}
	return m
}

// mountOf returns the mount point, filesystem type and source of the
// mount that holds path, from /proc/self/mountinfo: the last listed of the
// mounts with the longest mount point that is a prefix of path (a later
// mount on the same point hides an earlier one).
func mountOf(mountinfo []byte, path string) (mount, fs, source string) {
	mount, fs, source = "unknown", "unknown", "unknown"
	best := -1
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superopts
		left, right, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		lf, rf := strings.Fields(left), strings.Fields(right)
		if len(lf) < 5 || len(rf) < 2 {
			continue
		}
		mp := unescapeMount(lf[4])
		if !within(path, mp) || len(mp) < best {
			continue
		}
		best = len(mp)
		mount, fs, source = mp, rf[0], unescapeMount(rf[1])
	}
	return mount, fs, source
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	if dir == "/" || path == dir {
		return true
	}
	return strings.HasPrefix(path, dir+"/")
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// machineJiffies returns the busy and total CPU time of the whole machine
// from /proc/stat's "cpu" line; busy leaves out idle and iowait. Zero if
// it cannot be read.
func machineJiffies() (busy, total uint64) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, 0
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 6 || fields[0] != "cpu" {
		return 0, 0
	}
	// user nice system idle iowait irq softirq steal (guest time is
	// already in user).
	for i, f := range fields[1:min(len(fields), 9)] {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return 0, 0
		}
		total += v
		if i != 3 && i != 4 {
			busy += v
		}
	}
	return busy, total
}
