package gateway

// A stdio upstream's whole process group dies with it (issue 6 item 10).
//
// A stdio upstream is rarely one process: `sh -c 'x & exec y'`, npx (npm,
// then node), uvx, `docker run` (the Docker CLI). Its child is started in a
// process group of its own so that the group can be signalled as one. What
// can end the group depends on how the gateway ends:
//
//   - Close (SIGTERM, SIGINT): gateway code runs and could signal the group.
//   - SIGKILL, a crash, the OOM killer: no gateway code runs. Pdeathsig
//     reaches only the direct child, so whatever it started was orphaned.
//     Making the gateway a child subreaper does not help either: it is the
//     one that died.
//
// One mechanism covers both: each stdio child runs under a small supervisor,
// the gateway's own binary re-executed in a hidden mode (superviseArg). The
// gateway starts it with Pdeathsig SIGTERM, so the kernel tells it when the
// gateway dies, however it dies. The supervisor starts the real command in a
// new process group, hands it its own stdin, stdout and stderr (the pipes to
// the gateway, passed as file descriptors: nothing is copied), reports on a
// status pipe whether the command started (so a command that cannot run
// fails exactly as exec would report it), and then only waits:
//
//   - the command exits (it crashed, or stopped after the gateway closed its
//     stdin): whatever is left in its group is killed;
//   - SIGTERM (the gateway died, or is stopping a command that ignored its
//     closed stdin): the group gets SIGTERM, then SIGKILL after a grace
//     period shorter than the gateway's own wait, so the gateway never has
//     to kill the supervisor first.
//
// The command is waited for with WNOWAIT and reaped only after its group is
// killed: until then its pid, which is the group's id, cannot be reused.
//
// Trade-offs. One more small process per stdio child. Its reach is the
// process group: a descendant that leaves it (setsid, a daemon, a "detached"
// Node child) or a container run by the Docker daemon is beyond it (the
// Docker CLI forwards SIGTERM to its container, so the graceful path still
// stops that); a cgroup per upstream would close the gap but needs
// privileges a gateway should not ask for. If the supervisor itself is
// SIGKILLed, the command still dies (Pdeathsig) but not its group. Running the
// supervisor from the same binary means nothing more to ship or find; the
// package's init function catches the hidden mode in any binary that links
// the package (the gateway, its tests) before main runs.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/sys/unix"
)

// superviseArg, as the first argument, runs a binary linking this package as
// a supervisor: superviseArg GRACE PATH ARGV0 ARGS...
const superviseArg = "__credgate_supervise"

// superviseStatusFD is the supervisor's descriptor for its status pipe: it
// writes "ok" once the command started, or "errno N" if it could not start.
const superviseStatusFD = 3

func init() {
	if len(os.Args) > 1 && os.Args[1] == superviseArg {
		os.Exit(supervise(os.Args[2:], os.Stderr))
	}
}

// supervised returns a transport that runs cmd (prepared by command, not
// started) under a supervisor giving its group grace between SIGTERM and
// SIGKILL. cmd is changed to start the supervisor. opened is as in
// limitedCommand.
func supervised(cmd *exec.Cmd, grace time.Duration, lim *responseLimit, opened func(*stdioConn)) (mcp.Transport, error) {
	// /proc/self/exe is this binary even if its file was replaced or removed
	// since it started (an upgrade in place).
	const self = "/proc/self/exe"
	if _, err := os.Stat(self); err != nil {
		return nil, err
	}
	status, statusW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	path := cmd.Path
	cmd.Path = self
	cmd.Args = append([]string{"credgate-supervise", superviseArg, grace.String(), path}, cmd.Args...)
	cmd.ExtraFiles = []*os.File{statusW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	return &supervisedCommand{
		limitedCommand: limitedCommand{CommandTransport: &mcp.CommandTransport{Command: cmd, TerminateDuration: childTerminate}, lim: lim, opened: opened},
		path:           path,
		dir:            cmd.Dir,
		status:         status,
		statusW:        statusW,
	}, nil
}

// supervisedCommand is a CommandTransport whose process is the supervisor of
// the configured command. Connect returns once the command has started, or
// with the error exec would have returned for it.
type supervisedCommand struct {
	limitedCommand  // its stdout bounded line by line
	path            string
	dir             string // the command's working directory, also the supervisor's
	status, statusW *os.File
}

func (t *supervisedCommand) Connect(ctx context.Context) (mcp.Connection, error) {
	conn, err := t.limitedCommand.Connect(ctx)
	_ = t.statusW.Close() // the supervisor has its own copy
	defer t.status.Close()
	if err != nil {
		return nil, t.startError(err)
	}
	if err := readStatus(ctx, t.status, t.path); err != nil {
		_ = conn.Close() // the supervisor is exiting; this reaps it
		return nil, err
	}
	return conn, nil
}

// startError names what failed when the supervisor itself could not start.
// The supervisor exists (supervised checked it) and starts in the command's
// working directory, so exec's "fork/exec /proc/self/exe: ..." is about that
// directory when one is set: report it as a chdir failure of the command,
// never as the supervisor's path, which the user never configured.
func (t *supervisedCommand) startError(err error) error {
	var pe *fs.PathError
	if !errors.As(err, &pe) || pe.Op != "fork/exec" {
		return err
	}
	if t.dir != "" {
		return fmt.Errorf("starting %s: %w", t.path, &fs.PathError{Op: "chdir", Path: t.dir, Err: pe.Err})
	}
	return &fs.PathError{Op: pe.Op, Path: t.path, Err: pe.Err}
}

// readStatus reads the supervisor's report on starting path.
func readStatus(ctx context.Context, f *os.File, path string) error {
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Now()) })
	defer stop()
	b, err := io.ReadAll(io.LimitReader(f, 512))
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("starting %s: %w", path, ctx.Err())
		}
		return fmt.Errorf("starting %s: reading the supervisor's status: %w", path, err)
	}
	msg := string(b)
	switch {
	case msg == "ok":
		return nil
	case strings.HasPrefix(msg, "errno "):
		if n, err := strconv.Atoi(strings.TrimPrefix(msg, "errno ")); err == nil {
			return &fs.PathError{Op: "fork/exec", Path: path, Err: syscall.Errno(n)}
		}
	case msg == "":
		return fmt.Errorf("starting %s: the supervisor exited before starting it", path)
	}
	return fmt.Errorf("starting %s: %s", path, msg)
}

// supervise is the supervisor's main: args are GRACE PATH ARGV0 ARGS... It
// returns the command's exit code (128+N for a signal N).
func supervise(args []string, stderr io.Writer) int {
	if len(args) < 3 {
		fmt.Fprintf(stderr, "credgate supervise: want GRACE PATH ARGV0 [ARGS...], got %q\n", args)
		return 2
	}
	grace, err := time.ParseDuration(args[0])
	if err != nil {
		fmt.Fprintf(stderr, "credgate supervise: %v\n", err)
		return 2
	}
	// The status pipe must not leak into the command: it would hold the
	// gateway's read open after the supervisor is gone.
	syscall.CloseOnExec(superviseStatusFD)
	status := os.NewFile(superviseStatusFD, "status")
	// Catch the signals before the command exists, so that a gateway dying
	// right now still has its group killed.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	cmd := &exec.Cmd{
		Path: args[1], Args: args[2:], Env: os.Environ(),
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL},
	}
	if err := cmd.Start(); err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) {
			fmt.Fprintf(status, "errno %d", int(errno))
		} else {
			fmt.Fprint(status, err.Error())
		}
		return 127
	}
	fmt.Fprint(status, "ok")
	_ = status.Close()
	// The command has its own copies: the gateway sees the end of the
	// command's output when the command's group is gone, not the supervisor.
	_ = os.Stdin.Close()
	_ = os.Stdout.Close()

	pgid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		var info unix.Siginfo
		for {
			// WNOWAIT: the command stays a zombie, which pins its pid (the
			// group's id) until cmd.Wait reaps it below.
			err := unix.Waitid(unix.P_PID, pgid, &info, unix.WEXITED|unix.WNOWAIT, nil)
			if !errors.Is(err, syscall.EINTR) {
				return
			}
		}
	}()
	asked := false // to stop: its end is no news
	select {
	case <-exited:
	case <-sigs:
		asked = true
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		t := time.NewTimer(grace)
		select {
		case <-exited:
		case <-t.C:
		}
		t.Stop()
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-exited
	_ = cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if why := exitNote(ws); why != "" && !asked {
		// On the command's stderr, which the gateway reads to say why
		// it went down (usefulLine): without it, a child killed by a
		// signal or exiting silently was explained by whatever it last
		// logged, however old.
		fmt.Fprintf(stderr, "%s%s\n", exitNotePrefix, why)
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// exitNotePrefix starts the line the supervisor adds to a command's stderr
// when it ended with a failure nobody asked for.
const exitNotePrefix = "credgate: the command "

// exitNote says how a command that failed ended ("exited with status 3",
// "was killed by signal 9 (killed)"), or "" if it exited with status 0.
func exitNote(ws syscall.WaitStatus) string {
	switch {
	case ws.Signaled():
		return fmt.Sprintf("was killed by signal %d (%s)", int(ws.Signal()), ws.Signal())
	case ws.ExitStatus() != 0:
		return fmt.Sprintf("exited with status %d", ws.ExitStatus())
	}
	return ""
}
