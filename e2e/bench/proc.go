package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The bench reads CPU time per process from /proc/<pid>/stat: the
// gateway's (gatewayProc.cpuTicks), the processes below it (a stdio
// upstream and the credgate-supervise helper it runs under:
// descendantTicks), and its own (selfTicks), which holds the load clients
// and, for a direct run or an HTTP variant, the echo upstream. A call
// through the gateway costs all three; a direct call costs the driver's.

// procStat is the part of /proc/<pid>/stat the bench reads.
type procStat struct {
	ppid  int
	ticks int64 // utime+stime, in clock ticks
}

// parseStat parses the contents of /proc/<pid>/stat. The command name
// (field 2) may contain spaces and parentheses, so the fields are counted
// from its closing parenthesis, the last in the line: field 3 (state)
// follows it, then ppid (4), ..., utime (14) and stime (15).
func parseStat(data []byte) (procStat, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return procStat{}, errors.New("malformed /proc/pid/stat")
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return procStat{}, errors.New("short /proc/pid/stat")
	}
	ppid, err1 := strconv.Atoi(f[1])
	utime, err2 := strconv.ParseInt(f[11], 10, 64)
	stime, err3 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return procStat{}, fmt.Errorf("/proc/pid/stat: %w", err)
	}
	return procStat{ppid: ppid, ticks: utime + stime}, nil
}

// readStat reads and parses a stat file, e.g. /proc/self/stat.
func readStat(path string) (procStat, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return procStat{}, err
	}
	return parseStat(data)
}

// selfTicks is this process's CPU time in clock ticks.
func selfTicks() (int64, error) {
	st, err := readStat("/proc/self/stat")
	return st.ticks, err
}

// descendantTicks returns the pids of every process below pid (its
// children, theirs, and so on) and their CPU time in clock ticks. It scans
// every /proc/<n>/stat once: a process's parent is all /proc records,
// while /proc/<pid>/task/*/children needs a kernel option. A process that
// exits between two readings takes its ticks with it (its parent's
// cutime, which this does not read, gets them once it is reaped), so the
// figure is for long-lived children such as a stdio upstream.
func descendantTicks(pid int) (ticks int64, pids []int, err error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, nil, err
	}
	children := map[int][]int{}
	stats := map[int]procStat{}
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil || n <= 0 {
			continue // not a process
		}
		st, err := readStat("/proc/" + e.Name() + "/stat")
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			continue // exited since the listing
		}
		if err != nil {
			return 0, nil, fmt.Errorf("/proc/%d/stat: %w", n, err)
		}
		stats[n] = st
		children[st.ppid] = append(children[st.ppid], n)
	}
	for queue := children[pid]; len(queue) > 0; {
		p := queue[0]
		queue = append(queue[1:], children[p]...)
		pids = append(pids, p)
		ticks += stats[p].ticks
	}
	return ticks, pids, nil
}

// clockTicks returns the kernel's USER_HZ, which /proc/pid/stat counts in.
// It is read once; every reading converts with it.
var clockTicks = sync.OnceValue(func() int64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		return 100
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil || n <= 0 {
		return 100
	}
	return n
})

// ticksDuration converts clock ticks to time.
func ticksDuration(ticks int64) time.Duration {
	return time.Duration(ticks * int64(time.Second) / clockTicks())
}
