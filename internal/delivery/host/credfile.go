// Package host delivers keys on the host Keyward runs on: a profile of an AWS shared credentials
// file (credentials_file), written so that a reader never sees half a file, and a command given the
// key on its standard input (exec) for everything that has no kind of its own.
package host

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/keyward/keyward/internal/delivery"
	"github.com/keyward/keyward/internal/secret"
)

// Destination writes credentials_file and exec targets.
type Destination struct {
	Log *slog.Logger
	// Env is the whole environment of the commands run (PATH, HOME, LANG: see New).
	Env []string
	// BeforeRename, when set (the crash tests), runs between the temporary file's write and its rename.
	BeforeRename func()
}

var _ delivery.Destination = (*Destination)(nil)

// New returns a destination that logs to log and runs commands with PATH and HOME as given.
func New(log *slog.Logger, path, home string) *Destination {
	return &Destination{Log: log, Env: []string{"PATH=" + path, "HOME=" + home, "LANG=C.UTF-8"}}
}

// Stage implements delivery.Destination: a credentials file's directory exists (or is made, 0700)
// and the file, when there, can be read; a command can be found. Nothing is written.
func (d *Destination) Stage(ctx context.Context, s delivery.Spec, p delivery.Payload) error {
	switch s.Kind {
	case delivery.CredentialsFile:
		path, err := expand(s.File.Path)
		if err != nil {
			return fail("stage", s, err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return fail("stage", s, err)
		}
		if _, err := os.ReadFile(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fail("stage", s, err)
		}
		return nil
	case delivery.Exec:
		return d.findCommand(s)
	}
	return fmt.Errorf("%s: not a host target", s.Key())
}

// Publish implements delivery.Destination: the profile holds p (then the target's run command
// runs), or the command takes p.
func (d *Destination) Publish(ctx context.Context, s delivery.Spec, p delivery.Payload) error {
	if s.Kind == delivery.Exec {
		return d.run(ctx, s, p, "deliver")
	}
	return d.writeProfile(ctx, s, p)
}

// Withdraw implements delivery.Destination: the old key is written back (or given to the
// command); without it (a target first written by this rotation) the target is left as it is.
func (d *Destination) Withdraw(ctx context.Context, s delivery.Spec, p delivery.Payload, old *delivery.Payload) error {
	if old == nil {
		return nil
	}
	if s.Kind == delivery.Exec {
		return d.run(ctx, s, *old, "restore")
	}
	return d.writeProfile(ctx, s, *old)
}

// Current implements delivery.Destination. A command cannot be read back.
func (d *Destination) Current(ctx context.Context, s delivery.Spec) (delivery.Held, error) {
	if s.Kind == delivery.Exec {
		return delivery.Held{Unreadable: "a command keeps what it is given: Keyward cannot read it back"}, nil
	}
	path, err := expand(s.File.Path)
	if err != nil {
		return delivery.Held{}, fail("read", s, err)
	}
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return delivery.Held{}, nil
	} else if err != nil {
		return delivery.Held{}, fail("read", s, err)
	}
	id, sec := readProfile(raw, s.File.Profile)
	if id == "" {
		return delivery.Held{}, nil
	}
	return delivery.Held{KeyID: id, Content: delivery.JSON.Render(id, sec)}, nil
}

// Forget implements delivery.Destination: a file or a command has no label to take off.
func (d *Destination) Forget(context.Context, delivery.Spec, string) error { return nil }

// writeProfile puts p into the profile, every other line of the file as it was, atomically: a
// temporary file in the same directory (mode 0600, the file's owner kept), synced, renamed over the
// file, and the directory synced. A file that already holds p is not written again. Then the
// target's run command runs.
func (d *Destination) writeProfile(ctx context.Context, s delivery.Spec, p delivery.Payload) error {
	path, err := expand(s.File.Path)
	if err != nil {
		return fail("write", s, err)
	}
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fail("write", s, err)
	}
	updated := setProfile(old, s.File.Profile, p.KeyID, p.Secret)
	if !bytes.Equal(updated, old) || old == nil {
		if err := d.replace(path, updated); err != nil {
			return fail("write", s, err)
		}
	}
	if len(s.File.Run) > 0 {
		if err := d.runArgv(ctx, s, s.File.Run, nil, 0, "after writing"); err != nil {
			return err
		}
	}
	return nil
}

// tempPrefix names the temporary files; one left by a crash is removed by the next write.
const tempPrefix = ".keyward-tmp-"

func (d *Destination) replace(path string, content []byte) error {
	dir := filepath.Dir(path)
	if leftovers, _ := filepath.Glob(filepath.Join(dir, tempPrefix+filepath.Base(path)+"-*")); len(leftovers) > 0 {
		for _, l := range leftovers {
			_ = os.Remove(l) // a crash's half-done write: it holds a key, so it does not stay
		}
	}
	f, err := os.CreateTemp(dir, tempPrefix+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a rename there is nothing left to remove
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if st, err := os.Stat(path); err == nil {
		if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Getuid() {
			if err := f.Chown(int(sys.Uid), int(sys.Gid)); err != nil {
				f.Close()
				return fmt.Errorf("keep the file's owner %d: %w", sys.Uid, err)
			}
		}
	}
	if _, err := f.Write(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if d.BeforeRename != nil {
		d.BeforeRename()
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	dh, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer dh.Close()
	return dh.Sync()
}

// credentialKeys are the lines of a profile that Keyward writes, or removes: a session token left
// beside a new long-lived key would make every request fail.
var credentialKeys = map[string]bool{"aws_access_key_id": true, "aws_secret_access_key": true,
	"aws_session_token": true, "aws_security_token": true}

// setProfile returns the file with the profile holding keyID and sec: its credential lines replaced
// in place (a session token removed), every other line, comment and profile as it was; a missing
// profile is added at the end.
func setProfile(file []byte, profile, keyID string, sec secret.Value) []byte {
	lines := strings.SplitAfter(string(file), "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	want := []string{"aws_access_key_id = " + keyID + "\n", "aws_secret_access_key = " + sec.Reveal() + "\n"}
	var out []string
	in, found, written := false, false, false
	flush := func() {
		if in && !written {
			// Insert after the profile's last non-blank line.
			at := len(out)
			for at > 0 && strings.TrimSpace(out[at-1]) == "" {
				at--
			}
			out = append(out[:at], append(append([]string{}, want...), out[at:]...)...)
			written = true
		}
	}
	for _, l := range lines {
		if name, ok := section(l); ok {
			flush()
			in = name == profile
			found = found || in
			out = append(out, l)
			continue
		}
		if in {
			if k, _, ok := strings.Cut(l, "="); ok && credentialKeys[strings.ToLower(strings.TrimSpace(k))] {
				if !written { // the key takes the place of the profile's first credential line
					out = append(out, want...)
					written = true
				}
				continue
			}
		}
		out = append(out, l)
	}
	flush()
	if !found {
		if n := len(out); n > 0 && !strings.HasSuffix(out[n-1], "\n") {
			out[n-1] += "\n"
		}
		if len(out) > 0 && strings.TrimSpace(out[len(out)-1]) != "" {
			out = append(out, "\n")
		}
		out = append(out, "["+profile+"]\n")
		out = append(out, want...)
	}
	return []byte(strings.Join(out, ""))
}

// section reads a [name] line.
func section(line string) (string, bool) {
	t := strings.TrimSpace(line)
	if strings.HasPrefix(t, "[") && strings.HasSuffix(t, "]") {
		return strings.TrimSpace(t[1 : len(t)-1]), true
	}
	return "", false
}

// readProfile reads the key of one profile.
func readProfile(file []byte, profile string) (string, secret.Value) {
	var id, sec string
	in := false
	sc := bufio.NewScanner(bytes.NewReader(file))
	for sc.Scan() {
		if name, ok := section(sc.Text()); ok {
			in = name == profile
			continue
		}
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && in {
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "aws_access_key_id":
				id = strings.TrimSpace(v)
			case "aws_secret_access_key":
				sec = strings.TrimSpace(v)
			}
		}
	}
	return id, secret.New(sec)
}

// expand resolves a leading ~/ to the home directory.
func expand(path string) (string, error) {
	if rest, ok := strings.CutPrefix(path, "~/"); ok {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		return filepath.Join(home, rest), nil
	}
	return path, nil
}

// fail says what was being done to which target; no error here quotes a key.
func fail(doing string, s delivery.Spec, err error) error {
	return fmt.Errorf("%s %s: %w", doing, s.Key(), err)
}
