package scan_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyward/keyward/internal/scan"
)

// benchRepo is a generated repository: 2,000 commits and about 50 MB of text, with keys planted in
// some of its commits (and removed again in some).
type benchRepo struct {
	dir     string
	bytes   int64
	planted []string // key ids
}

var (
	benchOnce sync.Once
	bench     benchRepo
	benchErr  error
)

const keyAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

func makeBenchRepo(b *testing.B) benchRepo {
	benchOnce.Do(func() {
		dir, err := os.MkdirTemp("", "keyward-scan-bench")
		if err != nil {
			benchErr = err
			return
		}
		bench, benchErr = generate(dir, 2000, 50<<20)
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return bench
}

// generate writes a repository with git fast-import: commits of text files (words, code-like
// lines, base64-ish tokens that are not keys), every 100th commit planting a key id and its secret.
func generate(dir string, commits int, size int) (benchRepo, error) {
	r := benchRepo{dir: dir}
	if out, err := exec.Command("git", "-C", dir, "init", "-q", "-b", "main").CombinedOutput(); err != nil {
		return r, fmt.Errorf("%v: %s", err, out)
	}
	cmd := exec.Command("git", "-C", dir, "fast-import", "--quiet")
	in, err := cmd.StdinPipe()
	if err != nil {
		return r, err
	}
	if err := cmd.Start(); err != nil {
		return r, err
	}
	w := bufio.NewWriterSize(in, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("the key rotation vault secret access token deploy pipeline config region bucket account user policy " +
		"service request response handler error value string return func package import const var type struct map slice")
	token := func(n int) string {
		var sb strings.Builder
		for range n {
			sb.WriteByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"[rng.IntN(62)])
		}
		return sb.String()
	}
	per := size / commits
	for c := range commits {
		var buf bytes.Buffer
		for buf.Len() < per {
			switch rng.IntN(10) {
			case 0:
				fmt.Fprintf(&buf, "\tid := %q // %s\n", token(24), token(12))
			case 1:
				fmt.Fprintf(&buf, "ARN arn:aws:iam::%012d:user/%s AKIDSAMPLE%s\n", rng.IntN(1e12), words[rng.IntN(len(words))], token(8))
			default:
				for range 12 {
					buf.WriteString(words[rng.IntN(len(words))])
					buf.WriteByte(' ')
				}
				buf.WriteByte('\n')
			}
		}
		if c%100 == 50 {
			var id strings.Builder
			id.WriteString("AKIA")
			for range 16 {
				id.WriteByte(keyAlphabet[rng.IntN(32)])
			}
			r.planted = append(r.planted, id.String())
			fmt.Fprintf(&buf, "aws_access_key_id = %s\naws_secret_access_key = %s\n", id.String(), token(20)+"/"+token(19))
		}
		r.bytes += int64(buf.Len())
		fmt.Fprintf(w, "commit refs/heads/main\ncommitter t <t@example.com> %d +0000\ndata 6\nstep.\n", 1700000000+c)
		fmt.Fprintf(w, "M 100644 inline src/file%03d.txt\ndata %d\n%s\n", c%200, buf.Len(), buf.Bytes())
	}
	if err := w.Flush(); err != nil {
		return r, err
	}
	_ = in.Close()
	if err := cmd.Wait(); err != nil {
		return r, err
	}
	return r, nil
}

// BenchmarkScanHistory scans every blob of the generated repository, with keyward's scanner and —
// when the gitleaks binary is on PATH (go install github.com/zricethezav/gitleaks/v8@latest) — with
// gitleaks limited to its AWS rule, on the same repository; both must find every planted key id.
func BenchmarkScanHistory(b *testing.B) {
	repo := makeBenchRepo(b)
	b.Run("keyward", func(b *testing.B) {
		b.SetBytes(repo.bytes)
		for i := 0; i < b.N; i++ {
			s := scan.New(scan.Ignore{})
			fs, err := s.History(repo.dir)
			if err != nil {
				b.Fatal(err)
			}
			var ids []string
			for _, f := range fs {
				if f.Rule == scan.RuleKeyID {
					ids = append(ids, f.FullKeyID())
				}
			}
			checkPlanted(b, repo.planted, ids)
		}
	})
	b.Run("gitleaks", func(b *testing.B) {
		bin, err := exec.LookPath("gitleaks")
		if err != nil {
			b.Skip("gitleaks is not on PATH: go install github.com/zricethezav/gitleaks/v8@latest")
		}
		conf := filepath.Join(b.TempDir(), "aws.toml")
		// gitleaks's own AWS rule (config/gitleaks.toml, aws-access-token), alone.
		if err := os.WriteFile(conf, []byte(`[[rules]]
id = "aws-access-token"
regex = '''\b((?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})\b'''
keywords = ["a3t", "akia", "asia", "abia", "acca"]
`), 0o644); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(repo.bytes)
		for i := 0; i < b.N; i++ {
			report := filepath.Join(b.TempDir(), "report.json")
			cmd := exec.Command(bin, "git", repo.dir, "--config", conf, "--no-banner", "--log-level", "error",
				"--report-format", "json", "--report-path", report, "--exit-code", "0")
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("gitleaks: %v\n%s", err, out)
			}
			raw, err := os.ReadFile(report)
			if err != nil {
				b.Fatal(err)
			}
			var found []struct{ Secret string }
			if err := json.Unmarshal(raw, &found); err != nil {
				b.Fatal(err)
			}
			var ids []string
			for _, f := range found {
				ids = append(ids, f.Secret)
			}
			checkPlanted(b, repo.planted, ids)
		}
	})
}

func checkPlanted(b *testing.B, planted, found []string) {
	b.Helper()
	for _, id := range planted {
		if !slices.Contains(found, id) {
			b.Fatalf("planted key %s… not found (%d found of %d planted)", id[:8], len(found), len(planted))
		}
	}
}

// TestGeneratedRepository keeps the benchmark's generator honest on a small repository: every
// planted key is found in the history, and nothing else is.
func TestGeneratedRepository(t *testing.T) {
	repo, err := generate(t.TempDir(), 300, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	fs, err := scan.New(scan.Ignore{}).History(repo.dir)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	secrets := 0
	for _, f := range fs {
		switch f.Rule {
		case scan.RuleKeyID:
			ids = append(ids, f.FullKeyID())
		case scan.RuleSecret:
			secrets++
		}
	}
	slices.Sort(ids)
	want := slices.Clone(repo.planted)
	slices.Sort(want)
	if !slices.Equal(ids, want) || secrets != len(want) {
		t.Fatalf("found %d key ids and %d secrets in %s, want the %d planted", len(ids), secrets, time.Since(start), len(want))
	}
}
