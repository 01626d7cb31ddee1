package host

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/keyward/keyward/internal/delivery"
)

// execInput is what an exec target's command reads on its standard input: never in its arguments
// or environment, where other users of the host could read it (ps, /proc).
type execInput struct {
	Version         int    `json:"Version"`
	Action          string `json:"Action"` // deliver: the new key; restore: the old one, after a failed rotation
	AccessKeyID     string `json:"AccessKeyId"`
	SecretAccessKey string `json:"SecretAccessKey"`
}

// findCommand checks that the command exists.
func (d *Destination) findCommand(s delivery.Spec) error {
	if _, err := exec.LookPath(s.Exec.Command[0]); err != nil {
		return fail("stage", s, fmt.Errorf("command %q: %w", s.Exec.Command[0], errors.Unwrap(err)))
	}
	return nil
}

// run gives p to the exec target's command.
func (d *Destination) run(ctx context.Context, s delivery.Spec, p delivery.Payload, action string) error {
	in, _ := json.Marshal(execInput{Version: 1, Action: action, AccessKeyID: p.KeyID, SecretAccessKey: p.Secret.Reveal()})
	return d.runArgv(ctx, s, s.Exec.Command, in, s.Exec.Timeout, action)
}

// runArgv runs argv (no shell) with stdin, within timeout (30 s when 0), in the environment d.Env
// (PATH, HOME and LANG): Keyward's own variables (its master key, tokens) are not the command's. Its
// exit status decides; its output goes to the log, cut to one line, with any secret in stdin
// removed. The process group is killed at the timeout.
func (d *Destination) runArgv(ctx context.Context, s delivery.Spec, argv []string, stdin []byte, timeout time.Duration, doing string) error {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = d.Env
	cmd.Stdin = bytes.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	line := oneLine(out.Bytes(), stdin)
	if d.Log != nil {
		d.Log.Info("delivery command ran", "target", s.Key(), "command", argv[0], "doing", doing, "output", line, "error", errText(err))
	}
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		return fail(doing, s, fmt.Errorf("command %s did not finish within %s (killed)", argv[0], timeout))
	case err != nil:
		return fail(doing, s, fmt.Errorf("command %s: %v: %s", argv[0], err, line))
	}
	return nil
}

// oneLine is the command's output cut to one line of at most 200 characters, with every value of
// the JSON it was given that could be a secret replaced.
func oneLine(out, stdin []byte) string {
	s := string(out)
	var in execInput
	if json.Unmarshal(stdin, &in) == nil && in.SecretAccessKey != "" {
		s = strings.ReplaceAll(s, in.SecretAccessKey, "[redacted]")
	}
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > 200 {
		s = string(r[:200]) + "…"
	}
	return s
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
