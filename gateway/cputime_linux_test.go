package gateway

import (
	"runtime"
	"syscall"
	"testing"
	"time"
)

// rusageThread is Linux's RUSAGE_THREAD: the calling thread's usage.
const rusageThread = 1

// reportThreadCPU locks the benchmark's goroutine to its thread and, when
// the benchmark ends, reports the thread's CPU time per operation as
// "cpu-ns/op". On a loaded machine (other tests, other processes) ns/op
// counts the time the thread waited for a CPU; cpu-ns/op does not, so it is
// the figure to compare with a budget.
func reportThreadCPU(b *testing.B) {
	runtime.LockOSThread()
	start := threadCPU()
	b.Cleanup(func() {
		if b.N > 0 {
			b.ReportMetric(float64(threadCPU()-start)/float64(b.N), "cpu-ns/op")
		}
		runtime.UnlockOSThread()
	})
}

func threadCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(rusageThread, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
