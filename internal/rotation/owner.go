package rotation

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ProcessOwner names this process in rotation leases: host/pid/nonce (the nonce tells a restarted
// process with a reused pid from the one before).
func ProcessOwner() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b))
}

// LocalOwnerGone reports whether a lease's owner (named by ProcessOwner) was a process on this host
// that no longer exists, so that a restart after a crash resumes at once instead of waiting for the
// lease to run out. An owner on another host is never presumed gone. It suits Engine.OwnerGone.
func LocalOwnerGone(owner string) bool {
	parts := strings.Split(owner, "/")
	host, _ := os.Hostname()
	if len(parts) != 3 || parts[0] != host {
		return false
	}
	pid, err := strconv.Atoi(parts[1])
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return false
	}
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}
