//go:build !linux

package gateway

import "testing"

// reportThreadCPU reports nothing where threads' CPU time is not read.
func reportThreadCPU(*testing.B) {}
