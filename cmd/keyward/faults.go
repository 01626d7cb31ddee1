//go:build keywardfaults

package main

import (
	"os"
	"syscall"
)

// In a binary built with -tags keywardfaults (the crash tests build one; releases never do), the
// process kills itself with SIGKILL when the rotation engine reaches the point named by
// KEYWARD_FAULT_KILL_AT: a crash at an exact step of the protocol.
func init() {
	at := os.Getenv("KEYWARD_FAULT_KILL_AT")
	if at == "" {
		return
	}
	faultHook = func(point string) error {
		if point == at {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // SIGKILL is not caught; never go on
		}
		return nil
	}
}
