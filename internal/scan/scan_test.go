package scan_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyward/keyward/internal/scan"
)

// Planted credentials: made up, with the right shape (never real keys).
const (
	plantedID     = "AKIAQ2E5ZF3BW44C7R6M"
	plantedSecret = "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"
	sessionID     = "ASIAY34FZKBOKMUTVV7A"
	otherID       = "AKIAZ7QYXWVUTSRQPONM"
)

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func summary(fs []scan.Finding) string {
	var out []string
	for _, f := range fs {
		out = append(out, filepath.Base(f.File)+":"+itoa(f.Line)+":"+f.Rule+":"+f.KeyID)
	}
	return strings.Join(out, " ")
}

func itoa(n int) string { return fmt.Sprintf("%03d", n) }

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "config/app.ini", "[default]\naws_access_key_id = "+plantedID+"\naws_secret_access_key = "+plantedSecret+"\n")
	write(t, dir, "deploy.sh", "export AWS_ACCESS_KEY_ID="+sessionID+"\n# nothing else\n")
	write(t, dir, "settings.json", `{"SecretAccessKey": "`+plantedSecret+`"}`+"\n")
	write(t, dir, "docs/example.md", "AKIAIOSFODNN7EXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n")
	write(t, dir, "test/fixture.txt", "id "+otherID+" # keyward:allow\n")
	write(t, dir, "notakey.txt", "XAKIAQ2E5ZF3BW44C7R6M1 and AKIAQ2E5ZF3BW44C7R6 (too short)\n")
	write(t, dir, "image.png", "\x89PNG\x00\x00"+plantedID)
	write(t, dir, "vendor/lib.go", "const k = \""+otherID+"\"\n")
	write(t, dir, ".git/config", plantedID)
	write(t, dir, ".keywardignore", "# third-party code\nvendor/\n")
	ig, err := scan.LoadIgnore(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := scan.New(ig)
	fs, err := s.Paths([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	want := "app.ini:002:aws-access-key-id:AKIAQ2E5… app.ini:003:aws-secret-access-key:AKIAQ2E5… deploy.sh:001:aws-access-key-id:ASIAY34F… " +
		"settings.json:001:aws-secret-access-key:"
	if got := summary(fs); got != want {
		t.Fatalf("findings:\n%s\nwant\n%s", got, want)
	}
	// Nothing any output shows holds a secret or a whole key id.
	var out bytes.Buffer
	_ = scan.WriteText(&out, fs)
	_ = scan.WriteJSON(&out, fs, s.Bytes)
	_ = scan.WriteSARIF(&out, fs, "test")
	for _, secret := range []string{plantedID, plantedSecret, sessionID} {
		if strings.Contains(out.String(), secret) {
			t.Fatalf("an output holds %s:\n%s", secret[:4], out.String())
		}
	}
	// A key id in .keywardignore is allowed everywhere.
	ig2, _ := scan.ParseIgnore(strings.NewReader(sessionID + "\n"))
	if fs, _ := scan.New(ig2).Paths([]string{filepath.Join(dir, "deploy.sh")}); len(fs) != 0 {
		t.Fatalf("an ignored key id was found: %s", summary(fs))
	}
	if _, err := scan.New(scan.Ignore{}).Paths([]string{filepath.Join(dir, "missing")}); !errors.Is(err, scan.ErrInput) {
		t.Fatalf("a missing path: %v", err)
	}
	if _, err := scan.ParseIgnore(strings.NewReader("[\n")); !errors.Is(err, scan.ErrInput) {
		t.Fatalf("a bad pattern: %v", err)
	}
}

func TestSARIF(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.env", "AWS_ACCESS_KEY_ID="+plantedID+"\n")
	fs, _ := scan.New(scan.Ignore{}).Paths([]string{dir})
	var out bytes.Buffer
	if err := scan.WriteSARIF(&out, fs, "1.0"); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Version string
		Runs    []struct {
			Tool struct {
				Driver struct {
					Name  string
					Rules []struct{ ID string }
				}
			}
			Results []struct {
				RuleID    string
				Locations []struct {
					PhysicalLocation struct {
						ArtifactLocation struct{ URI string }
						Region           struct{ StartLine int }
					}
				}
			}
		}
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil || doc.Version != "2.1.0" || len(doc.Runs) != 1 || doc.Runs[0].Tool.Driver.Name != "keyward" ||
		len(doc.Runs[0].Results) != 1 || doc.Runs[0].Results[0].RuleID != scan.RuleKeyID ||
		doc.Runs[0].Results[0].Locations[0].PhysicalLocation.Region.StartLine != 1 {
		t.Fatalf("SARIF: %v\n%s", err, out.String())
	}
}

// gitRepo makes a repository in a new directory, committing the files of each step in turn.
func gitRepo(t *testing.T, steps ...map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	run("init", "-q", "-b", "main")
	for i, files := range steps {
		for name, content := range files {
			if content == "" {
				run("rm", "-q", name)
				continue
			}
			write(t, dir, name, content)
			run("add", name)
		}
		run("commit", "-q", "-m", "step "+itoa(i))
	}
	return dir
}

func TestHistoryAndStaged(t *testing.T) {
	dir := gitRepo(t,
		map[string]string{"README.md": "hello\n"},
		map[string]string{"ci.yml": "key: " + plantedID + "\nsecret: " + plantedSecret + "\n"},
		map[string]string{"ci.yml": ""}, // removed again: still in the history
		map[string]string{"notes.txt": "fine\n"},
	)
	s := scan.New(scan.Ignore{})
	fs, err := s.History(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := summary(fs); got != "ci.yml:001:aws-access-key-id:AKIAQ2E5… ci.yml:002:aws-secret-access-key:AKIAQ2E5…" {
		t.Fatalf("history: %s", got)
	}
	commits, _ := exec.Command("git", "-C", dir, "log", "--format=%H", "--reverse").Output()
	second := strings.Fields(string(commits))[1]
	if fs[0].Commit != second {
		t.Fatalf("commit %s, want %s (the one that added it)", fs[0].Commit, second)
	}
	if fs, _ := scan.New(scan.Ignore{}).Paths([]string{dir}); len(fs) != 0 {
		t.Fatalf("the working tree has no key, but: %s", summary(fs))
	}

	// Staged: only the lines a commit would add, numbered as in the new file.
	write(t, dir, "notes.txt", "fine\nstill fine\nAWS_ACCESS_KEY_ID="+sessionID+"\n")
	if out, err := exec.Command("git", "-C", dir, "add", "notes.txt").CombinedOutput(); err != nil {
		t.Fatal(string(out))
	}
	fs, err = s.Staged(dir)
	if err != nil || summary(fs) != "notes.txt:003:aws-access-key-id:ASIAY34F…" {
		t.Fatalf("staged: %s %v", summary(fs), err)
	}
	for _, f := range []func(string) ([]scan.Finding, error){s.History, s.Staged} {
		if _, err := f(t.TempDir()); !errors.Is(err, scan.ErrInput) {
			t.Fatalf("not a repository: %v", err)
		}
	}
}
