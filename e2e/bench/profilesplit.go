package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// cpuShare is the part of a CPU profile's samples in one category.
type cpuShare struct {
	Category string  `json:"category"`
	Ms       float64 `json:"ms"`
	Percent  float64 `json:"percent"`
}

// cpuCategory is one of cpuSplit's categories.
type cpuCategory struct {
	name string
	test func(stack []string) bool // stack[0] is the leaf
}

// cpuCategories are the categories of cpuSplit in the order they are
// tried: a sample counts in the first whose test its stack passes, so the
// shares add up to 100%. The first four are the profile breakdown
// (garbage collection, syscalls, credgate's own code, go-sdk work).
func cpuCategories() []cpuCategory {
	return []cpuCategory{
		{"garbage collection", func(s []string) bool {
			return anyFrame(s, "runtime.gc", "runtime.bgsweep", "runtime.bgscavenge", "runtime.markroot", "runtime.scanobject", "runtime.sweepone", "runtime.(*sweepLocked)")
		}},
		{"syscalls (leaf)", func(s []string) bool {
			return hasPrefix(s[0], "syscall.", "internal/runtime/syscall", "runtime/internal/syscall", "runtime.futex", "runtime.epollwait", "runtime.madvise", "runtime.usleep", "runtime.write1", "runtime.read", "runtime.nanotime", "runtime.walltime")
		}},
		{"credgate's own code (leaf)", func(s []string) bool { return hasPrefix(s[0], "github.com/credgate/credgate") }},
		{"under go-sdk frames", func(s []string) bool { return anyFrame(s, "github.com/modelcontextprotocol/go-sdk") }},
		{"under net/http frames (no go-sdk)", func(s []string) bool { return anyFrame(s, "net/http.", "net.") }},
		{"other runtime (scheduler, malloc)", func(s []string) bool { return hasPrefix(s[0], "runtime.") }},
	}
}

// cpuSplit reads a CPU profile through `go tool pprof -traces` and
// divides its samples among cpuCategories, plus "other".
func cpuSplit(ctx context.Context, file string) ([]cpuShare, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-traces", file).Output()
	if err != nil {
		return nil, fmt.Errorf("go tool pprof -traces %s: %w", file, err)
	}
	return splitTraces(string(out))
}

// splitTraces categorises the samples of `pprof -traces` output: stacks
// separated by "-----------+---..." lines, the first line of each holding
// the sample's value and the leaf frame.
func splitTraces(out string) ([]cpuShare, error) {
	cats := cpuCategories()
	sums := make([]time.Duration, len(cats)+1)
	var total time.Duration
	var (
		value time.Duration
		stack []string
	)
	flush := func() {
		if len(stack) == 0 {
			return
		}
		i := len(cats) // other
		for j, c := range cats {
			if c.test(stack) {
				i = j
				break
			}
		}
		sums[i] += value
		total += value
		stack = stack[:0]
	}
	inTrace := false
	for line := range strings.Lines(out) {
		line = strings.TrimRight(line, "\n")
		if strings.HasPrefix(line, "-----------+") {
			flush()
			inTrace = true
			continue
		}
		if !inTrace || strings.TrimSpace(line) == "" {
			continue
		}
		if len(stack) == 0 {
			f := strings.Fields(line)
			if len(f) < 2 {
				return nil, fmt.Errorf("pprof -traces: unexpected line %q", line)
			}
			d, err := time.ParseDuration(f[0])
			if err != nil {
				return nil, fmt.Errorf("pprof -traces: sample value %q: %w", f[0], err)
			}
			value = d
			stack = append(stack, f[1])
			continue
		}
		stack = append(stack, strings.TrimSpace(line))
	}
	flush()
	if total == 0 {
		return nil, fmt.Errorf("pprof -traces: no samples")
	}
	shares := make([]cpuShare, len(sums))
	for i, d := range sums {
		name := "other"
		if i < len(cats) {
			name = cats[i].name
		}
		shares[i] = cpuShare{Category: name, Ms: ms(d), Percent: 100 * float64(d) / float64(total)}
	}
	return shares, nil
}

func anyFrame(stack []string, prefixes ...string) bool {
	for _, f := range stack {
		if hasPrefix(f, prefixes...) {
			return true
		}
	}
	return false
}

func hasPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// shortenGenerics replaces the type arguments of generic functions in a
// pprof line ("f[go.shape.*uint8,go.shape.struct { ... }]") with "[...]":
// a go-sdk handler's full instantiation runs to several hundred characters.
func shortenGenerics(line string) string {
	var b strings.Builder
	depth := 0
	for _, r := range line {
		switch {
		case r == '[':
			if depth == 0 {
				b.WriteString("[...]")
			}
			depth++
		case r == ']' && depth > 0:
			depth--
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
}
