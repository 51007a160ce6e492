package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseStat(t *testing.T) {
	t.Parallel()
	// A command name with spaces and parentheses; ppid 42, utime 7, stime 3.
	line := "1234 (a (b) c) S 42 1234 1234 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 100 1000 100 18446744073709551615\n"
	got, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(procStat{ppid: 42, ticks: 10}, got, cmp.AllowUnexported(procStat{})); diff != "" {
		t.Errorf("parseStat mismatch (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"1234 no parenthesis", "1234 (x) S 1 2 3"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q): no error", bad)
		}
	}
	if _, err := selfTicks(); err != nil {
		t.Errorf("selfTicks: %v", err)
	}
}

// TestDescendantTicks starts a shell that starts sleep, a grandchild of
// this test, the way a gateway runs a stdio upstream under
// credgate-supervise: the walk from this process finds both, the walk from
// the shell finds sleep alone, and the walk from sleep finds nothing.
func TestDescendantTicks(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", "sleep 30 & echo $!; wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // so the cleanup kills sleep too
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	}()
	// The shell prints sleep's pid once it has started it.
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("reading sleep's pid: %v", err)
	}
	sleep, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	sh := cmd.Process.Pid

	_, pids, err := descendantTicks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Other tests' children may be there too.
	if !slices.Contains(pids, sh) || !slices.Contains(pids, sleep) {
		t.Errorf("descendants of this process %v lack the shell %d or its child sleep %d", pids, sh, sleep)
	}
	ticks, pids, err := descendantTicks(sh)
	if err != nil || !slices.Equal(pids, []int{sleep}) || ticks < 0 {
		t.Errorf("descendantTicks(shell) = %d, %v, %v; want sleep %d alone", ticks, pids, err, sleep)
	}
	if _, pids, err := descendantTicks(sleep); err != nil || len(pids) != 0 {
		t.Errorf("descendantTicks(sleep) = %v, %v; want none", pids, err)
	}
}
